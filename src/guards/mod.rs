//! Guards against destructive operations (incidents 3 and 4): TRUNCATE,
//! mass DELETE and DROP of protected tables stop at the database with a
//! message that says what was about to happen.
//!
//! - `protect.rs`: `protect`, `unprotect`;
//! - `delete_budget.rs`: rows deleted per protected table per transaction;
//! - `guard_drop.rs`: the `sql_drop` and `ddl_command_end` event triggers;
//! - `lint.rs`: `lint()`;
//! - `before_truncate.rs`: the TRUNCATE guard (and capture).
//!
//! The DELETE budget is counted by the audit's AFTER DELETE trigger:
//! `protect` enables the audit.
pub mod before_truncate;
pub mod delete_budget;
pub mod guard_ddl;
pub mod lint;
pub mod protect;
pub mod reinstall;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys::Oid;

use crate::catalog::{self_and_ancestors, Table};
use crate::errors::{Code, InvariantError};

/// The max_delete_rows of the protected table `relid` belongs to (itself or
/// a partitioned table above it), or None when it is not protected.
pub fn protected_limit(relid: Oid) -> Option<i64> {
    protected_table(relid).map(|(_, limit)| limit)
}

/// The protected table `relid` belongs to (itself or a partitioned table
/// above it) and its max_delete_rows.
pub fn protected_table(relid: Oid) -> Option<(Oid, i64)> {
    self_and_ancestors(relid).into_iter().find_map(|oid| {
        crate::sql::one::<i64>(
            "SELECT max_delete_rows FROM invariants.protected_tables WHERE tbl = $1::oid::regclass",
            &[oid.into()],
        )
        .map(|limit| (oid, limit))
    })
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
