//! Guards against destructive operations (incidents 3 and 4): TRUNCATE,
//! mass DELETE and DROP of protected tables stop at the database with a
//! message that says what was about to happen.
//!
//! - `protect.rs`: `protect`, `unprotect`;
//! - `budget.rs`: rows deleted and updated per protected table per transaction;
//! - `update_budget.rs`: the AFTER UPDATE trigger that counts updated rows;
//! - `guard_ddl.rs`: the event triggers;
//! - `lint.rs`: `lint()`;
//! - `before_truncate.rs`: the TRUNCATE guard (and capture).
//!
//! The DELETE budget is counted by the audit's AFTER DELETE trigger:
//! `protect` enables the audit.
pub mod before_truncate;
pub mod budget;
pub mod guard_ddl;
pub mod lint;
pub mod protect;
pub mod reinstall;
pub mod update_budget;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys::Oid;

use crate::catalog::Table;
use crate::errors::{Code, InvariantError};
use crate::table_config::TableConfig;

pub const CAPABILITY: crate::registry::Capability = crate::registry::Capability {
    triggers,
    follow_column_rename: crate::registry::names_no_column,
};

/// The TRUNCATE guard and the update budget's trigger `relid` needs.
fn triggers(relid: Oid, lineage: &[Oid]) -> Vec<crate::registry::Trigger> {
    let mut triggers = before_truncate::triggers(relid, lineage);
    triggers.extend(update_budget::triggers(relid, lineage));
    triggers
}

pub use crate::table_config::Protection;

/// The protection `relid` is under (declared on it or on a table above
/// it), or None when it is not protected.
pub fn protection(relid: Oid) -> Option<Protection> {
    TableConfig::of(relid).protection.clone()
}

pub fn is_protected(relid: Oid) -> bool {
    protection(relid).is_some()
}

/// True when the current user owns `table` (or belongs to its owning role).
pub fn is_owner(table: &Table) -> bool {
    crate::sql::one::<bool>(
        "SELECT pg_catalog.pg_has_role(relowner, 'USAGE') FROM pg_catalog.pg_class WHERE oid = $1",
        &[table.oid.into()],
    ) == Some(true)
}

/// Whether switch `setting` (already known to be on) unlocks `table`: only
/// for its owner. For anyone else the refusal says so.
pub fn switch_allows(setting: &str, table: &Table) -> Result<(), InvariantError> {
    if is_owner(table) {
        return Ok(());
    }
    Err(InvariantError::new(
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("{setting} is honored only for the owner of {}", table.display()),
    )
    .hint("Ask the table's owner to run the operation, or to unprotect the table.")
    .table(&table.schema, &table.name))
}
