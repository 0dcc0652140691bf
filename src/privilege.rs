//! The extension's tables are not writable by PUBLIC. Functions that must
//! write them on a table owner's behalf switch to the extension's owner for
//! just that write, the way Postgres itself runs foreign-key checks.
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::catalog::spi_row;

fn extension_owner() -> Oid {
    spi_row(Spi::get_one::<Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_invariants'",
    ))
    .flatten()
    .unwrap_or_else(|| {
        crate::errors::fail(
            crate::errors::Code::ERRCODE_UNDEFINED_OBJECT,
            "extension pg_invariants is not installed in this database",
        )
    })
}

/// Restores the caller's user id when dropped, on unwinding too.
struct RestoreUser {
    user: Oid,
    context: i32,
}

impl Drop for RestoreUser {
    fn drop(&mut self) {
        // SAFETY: plain assignment of the saved values; cannot fail.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as the extension's owner. Errors inside `f` abort the
/// (sub)transaction, which restores the user id as well.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    as_user(extension_owner(), f)
}

/// Runs `f` as the owner of relation `relid`, the way Postgres runs
/// foreign-key actions.
pub fn as_table_owner<R>(relid: Oid, f: impl FnOnce() -> R) -> R {
    let owner = spi_row(Spi::get_one_with_args::<Oid>(
        "SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ))
    .flatten()
    .unwrap_or_else(|| crate::errors::fail(crate::errors::Code::ERRCODE_UNDEFINED_TABLE, "table no longer exists"));
    as_user(owner, f)
}

fn as_user<R>(owner: Oid, f: impl FnOnce() -> R) -> R {
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: both out-pointers are valid locals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    let _restore = RestoreUser { user, context };
    // SAFETY: switching the current user to an existing role, marked as a
    // local change so SET ROLE cannot be used meanwhile.
    unsafe { pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32) };
    f()
}
