//! Who runs what (README "Security").
//!
//! - Every query the extension runs has `search_path` pinned to
//!   `pg_catalog, pg_temp` ([`pinned`]), so no function, operator or type of
//!   a caller's schemas can stand in for a built-in one.
//! - Work on a user table (reading it to capture, restore, repair, detect,
//!   count, soft delete, purge, undelete) runs as that table's owner
//!   ([`as_table_owner`]), the way Postgres runs VACUUM, ANALYZE and
//!   foreign-key actions: the owner's code (triggers, index and statistics
//!   expressions, defaults, domain checks, casts) runs with the owner's
//!   rights and no more, cannot SET ROLE, and, for a caller who is not the
//!   owner, cannot leave anything behind that would run later with the
//!   caller's rights (a restricted security context); row-level security
//!   does not hide rows.
//! - The extension owner's rights are taken only to write the extension's
//!   own tables ([`as_extension_owner`]), by statements that name no user
//!   object.
use pgrx::pg_sys::{self, Oid};

use crate::errors::{fail, Code};

/// A GUC nesting level: settings made inside it (by `set` or by any code
/// that runs meanwhile) are undone when it is dropped, on unwinding too.
struct GucLevel(i32);

impl GucLevel {
    fn open() -> GucLevel {
        // SAFETY: opens a nesting level, closed exactly once by Drop.
        GucLevel(unsafe { pg_sys::NewGUCNestLevel() })
    }

    /// Sets `name` to `value` until the level closes.
    fn set(&self, name: &std::ffi::CStr, value: &std::ffi::CStr) {
        // SAFETY: both strings are NUL-terminated constants naming a
        // setting that exists and a value it accepts; elevel 0 means a
        // failure is returned, not raised.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            )
        };
    }

    fn pin_search_path(&self) {
        self.set(c"search_path", c"pg_catalog, pg_temp");
    }
}

impl Drop for GucLevel {
    fn drop(&mut self) {
        // SAFETY: closes the level opened in `open`; `false` undoes every
        // setting made inside it, as Postgres does after VACUUM's work.
        unsafe { pg_sys::AtEOXact_GUC(false, self.0) };
    }
}

/// Runs `f` with `search_path` pinned to `pg_catalog, pg_temp`. Every SQL
/// function and trigger of the extension runs its queries inside this.
/// Errors of those queries reach the caller with every field.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    let _inner = crate::errors::InnerErrors::enter();
    let level = GucLevel::open();
    level.pin_search_path();
    let result = f();
    drop(level);
    result
}

/// Runs `f` with the settings that decide how values are written as text
/// fixed, so that a value written and read back under them is the same
/// value whatever the session's `DateStyle`, `IntervalStyle`,
/// `extra_float_digits` or `lc_monetary` say. (`TimeZone` changes how an
/// instant is written, never which instant: the offset is written too.)
pub fn with_canonical_formats<R>(f: impl FnOnce() -> R) -> R {
    let level = GucLevel::open();
    level.set(c"DateStyle", c"ISO, YMD");
    level.set(c"IntervalStyle", c"postgres");
    level.set(c"extra_float_digits", c"3");
    level.set(c"lc_monetary", c"C");
    level.set(c"bytea_output", c"hex");
    // Binary images carry text in the database's encoding: no conversion
    // on the way out (send functions) or in (receive functions).
    level.set(c"client_encoding", database_encoding());
    let result = f();
    drop(level);
    result
}

/// The name of the database's encoding.
fn database_encoding() -> &'static std::ffi::CStr {
    // SAFETY: Postgres returns a pointer to a constant name.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }
}

/// The user id and security context in effect, put back when dropped (on
/// unwinding too).
struct SavedUser {
    user: Oid,
    context: i32,
}

impl SavedUser {
    fn current() -> SavedUser {
        let mut user = pg_sys::InvalidOid;
        let mut context = 0;
        // SAFETY: both out-pointers are valid locals.
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
        SavedUser { user, context }
    }
}

impl Drop for SavedUser {
    fn drop(&mut self) {
        // SAFETY: plain assignment of the saved values; cannot fail.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as `role`, with its own GUC level and `search_path` pinned,
/// `SET ROLE` barred, and, unless `role` is the one running now, in a
/// security-restricted context (no temporary objects, held cursors or
/// deferred triggers that would outlive `f` and run with the caller's
/// rights). `flags` are added to the context.
fn as_role<R>(role: Oid, flags: u32, f: impl FnOnce() -> R) -> R {
    let saved = SavedUser::current();
    let restricted = if saved.user == role {
        0
    } else {
        pg_sys::SECURITY_RESTRICTED_OPERATION
    };
    let context = saved.context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | restricted | flags) as i32;
    // SAFETY: switches to an existing role; `saved` switches back.
    unsafe { pg_sys::SetUserIdAndSecContext(role, context) };
    let level = GucLevel::open();
    level.pin_search_path();
    let result = f();
    drop(level);
    drop(saved);
    result
}

/// The owner of relation `relid`, read from the catalog cache.
pub fn relation_owner(relid: Oid) -> Option<Oid> {
    // SAFETY: a syscache lookup by oid; the tuple is a pg_class row while
    // held, and released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(relid));
        if tuple.is_null() {
            return None;
        }
        let owner = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// Runs `f` as the owner of relation `relid`: restricted, `search_path`
/// pinned, row-level security not hiding rows (as Postgres runs
/// foreign-key checks).
pub fn as_table_owner<R>(relid: Oid, f: impl FnOnce() -> R) -> R {
    let Some(owner) = relation_owner(relid) else {
        // untestable: a table dropped by another session between the lookup and the use
        fail(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} no longer exists", relid.to_u32()),
        )
    };
    as_role(owner, pg_sys::SECURITY_NOFORCE_RLS, f)
}

fn extension_owner() -> Oid {
    pinned(|| {
        crate::sql::one::<Oid>(
            "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_invariants'",
            &[],
        )
    })
    .unwrap_or_else(|| {
        // untestable: the extension's functions run only where it is installed
        fail(
            Code::ERRCODE_UNDEFINED_OBJECT,
            "extension pg_invariants is not installed in this database",
        )
    })
}

/// Runs `f`, which reads the extension's own tables and names no user
/// object, as the extension's owner, changing nothing else (no command
/// counter increment: safe inside a statement that is running, such as a
/// COPY).
pub fn reading_as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    as_role(extension_owner(), 0, f)
}

/// Runs `f`, which writes the extension's own tables and names no user
/// object, as the extension's owner. What it wrote is visible to every
/// query that follows.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    let result = as_role(extension_owner(), 0, f);
    // SAFETY: makes this command's changes visible to the next ones.
    unsafe { pg_sys::CommandCounterIncrement() };
    result
}

/// The role whose rights a statement runs with now (`current_user`).
pub fn current_user() -> Oid {
    // SAFETY: reads the session's current user id.
    unsafe { pg_sys::GetUserId() }
}
