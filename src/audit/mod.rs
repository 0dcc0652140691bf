//! Audit of DELETE, TRUNCATE and (when asked) UPDATE: every removed row,
//! and every changed column of an updated row, is copied to
//! `invariants.audit_log`, and `invariants.restore` puts it back.
//!
//! - `enable_audit.rs`: `enable_audit`, `disable_audit` and the triggers they install;
//! - `audit_delete.rs`: the statement-level AFTER DELETE trigger (transition table);
//! - `audit_update.rs`: the statement-level AFTER UPDATE trigger (old and new rows);
//! - `restore.rs`: `restore()`; `put_back.rs`: how one capture's rows go back;
//! - `capture_entries.rs`: an UPDATE capture's entries as rows, for its revert.
pub mod audit_delete;
pub mod audit_update;
mod capture_entries;
pub mod enable_audit;
mod put_back;
pub mod restore;

#[cfg(any(test, feature = "pg_test"))]
mod tests;
#[cfg(any(test, feature = "pg_test"))]
mod update_tests;

use pgrx::pg_sys::Oid;

use crate::table_config::TableConfig;

pub const CAPABILITY: crate::registry::Capability = crate::registry::Capability {
    triggers: enable_audit::triggers,
    follow_column_rename,
};

pub use crate::table_config::AuditSettings;

/// The audit settings that apply to `relid` (set on it or on a table above
/// it), or None when it is not audited.
pub fn settings(relid: Oid) -> Option<AuditSettings> {
    TableConfig::of(relid).audit.clone()
}

/// The columns of `relid` its audit keeps out of the log (none when it is
/// not audited).
pub fn excluded_columns(relid: Oid) -> Vec<String> {
    settings(relid).map(|s| s.exclude).unwrap_or_default()
}

/// A column of `relid` renamed: its exclusion from the audit follows.
pub fn follow_column_rename(relid: Oid, old: &str, new: &str) {
    crate::privilege::as_extension_owner(|| {
        crate::catalog::spi(pgrx::Spi::run_with_args(
            "UPDATE invariants.audited_tables SET exclude = pg_catalog.array_replace(exclude, $2, $3)
              WHERE tbl = $1::pg_catalog.oid::pg_catalog.regclass AND $2 = ANY (exclude)",
            &[relid.into(), old.into(), new.into()],
        ))
    });
}
