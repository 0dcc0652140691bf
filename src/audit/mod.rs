//! Audit of DELETE and TRUNCATE (incidents 3 and 4): every removed row is
//! copied to `invariants.audit_log`, and `invariants.restore` puts it back.
//!
//! - `enable_audit.rs`: `enable_audit`, `disable_audit` and the triggers they install;
//! - `audit_delete.rs`: the statement-level AFTER DELETE trigger (transition table);
//! - `restore.rs`: `restore()`; `put_back.rs`: how one capture's rows go back.
pub mod audit_delete;
pub mod enable_audit;
mod put_back;
pub mod restore;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys::Oid;

use crate::catalog::self_and_ancestors;

/// The truncate capture limit that applies to `relid` (set on it or on the
/// partitioned table above it), or None when it is not audited.
pub fn truncate_capture_limit(relid: Oid) -> Option<i64> {
    for oid in self_and_ancestors(relid) {
        let limit = crate::sql::one::<i64>(
            "SELECT truncate_capture_limit FROM invariants.audited_tables WHERE tbl = $1::oid::regclass",
            &[oid.into()],
        );
        if limit.is_some() {
            return limit;
        }
    }
    None
}
