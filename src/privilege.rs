//! The extension's tables are not writable by PUBLIC. Functions that must
//! write them on a table owner's behalf switch to the extension's owner for
//! just that write, the way Postgres itself runs foreign-key checks, with
//! `search_path` pinned to `pg_catalog, pg_temp` meanwhile (as a SECURITY
//! DEFINER function with a pinned search_path would have it), so that no
//! function or operator of the caller's schemas runs with those rights.
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

/// Runs `f` as the extension's owner, with the search path pinned. Errors
/// inside `f` abort the (sub)transaction, which restores both as well.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = extension_owner();
    // SAFETY: opens a GUC nesting level, closed by PinnedSearchPath's drop.
    let nest_level = unsafe { pg_sys::NewGUCNestLevel() };
    let _restore_path = PinnedSearchPath(nest_level);
    // SAFETY: sets a known setting to a constant, valid value; elevel 0
    // means a failure is reported as a return value instead of raised.
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        )
    };
    as_user(owner, f)
}

/// Puts the search path back when dropped, on unwinding too.
struct PinnedSearchPath(i32);

impl Drop for PinnedSearchPath {
    fn drop(&mut self) {
        // SAFETY: closes the nesting level opened by as_extension_owner.
        unsafe { pg_sys::AtEOXact_GUC(!std::thread::panicking(), self.0) };
    }
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
