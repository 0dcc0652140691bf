//! Soft delete (incident 4): a DELETE on a soft-delete table sets its
//! `deleted_at` column instead, cascading along ON DELETE CASCADE keys, and
//! nothing is lost until `purge`.
//!
//! - `enable_soft_delete.rs`: `enable_soft_delete`, `disable_soft_delete`;
//! - `soft_delete.rs`: the triggers `invariants.soft_delete_row()` (BEFORE
//!   DELETE, per row: notes the row, keeps it) and
//!   `invariants.soft_delete_apply()` (AFTER DELETE, per statement: one
//!   UPDATE for the noted rows, then their cascade children);
//! - `preload.rs`: with the library preloaded, DELETE becomes the UPDATE
//!   itself, so clients see `DELETE n` and RETURNING;
//! - `purge.rs`: `purge`; `undelete.rs`: `undelete`.
pub mod enable_soft_delete;
pub mod preload;
pub mod purge;
// Named after its triggers, invariants.soft_delete_*().
#[allow(clippy::module_inception)]
pub mod soft_delete;
pub mod tree;
pub mod undelete;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use crate::table_config::TableConfig;

pub const CAPABILITY: crate::registry::Capability = crate::registry::Capability {
    triggers: enable_soft_delete::triggers,
    follow_column_rename,
};

/// The soft-delete column of `relid` (set on it or on a table above it),
/// or None when it is not a soft-delete table.
pub fn soft_delete_column(relid: Oid) -> Option<String> {
    TableConfig::of(relid).soft_delete.as_ref().map(|s| s.column.clone())
}

pub use crate::catalog::{cascade_keys, CascadeKey};

/// Follows the rename of column `old` of `relid` to `new` in its soft-delete
/// setting.
pub fn follow_column_rename(relid: Oid, old: &str, new: &str) {
    crate::privilege::as_extension_owner(|| {
        crate::catalog::spi(Spi::run_with_args(
            "UPDATE invariants.soft_delete_tables SET column_name = $3 WHERE tbl = $1::pg_catalog.oid::pg_catalog.regclass AND column_name = $2",
            &[relid.into(), old.into(), new.into()],
        ))
    });
}
