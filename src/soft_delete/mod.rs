//! Soft delete (incident 4): a DELETE on a soft-delete table sets its
//! `deleted_at` column instead, cascading along ON DELETE CASCADE keys, and
//! nothing is lost until `purge`.
//!
//! - `enable_soft_delete.rs`: `enable_soft_delete`, `disable_soft_delete`;
//! - `soft_delete.rs`: the triggers `invariants.soft_delete_row()` (BEFORE
//!   DELETE, per row: notes the row, keeps it) and
//!   `invariants.soft_delete_apply()` (AFTER DELETE, per statement: one
//!   UPDATE for the noted rows, then their cascade children);
//! - `purge.rs`: `purge`; `undelete.rs`: `undelete`.
pub mod enable_soft_delete;
pub mod purge;
pub mod soft_delete;
pub mod undelete;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use crate::catalog::{quote_ident, self_and_ancestors, spi, spi_row, Table};

/// The soft-delete column of `relid` (set on it or on the partitioned table
/// above it), or None when it is not a soft-delete table.
pub fn soft_delete_column(relid: Oid) -> Option<String> {
    self_and_ancestors(relid).into_iter().find_map(|oid| {
        spi_row(Spi::get_one_with_args::<String>(
            "SELECT column_name FROM invariants.soft_delete_tables WHERE tbl = $1::oid::regclass",
            &[oid.into()],
        ))
        .flatten()
    })
}

/// An ON DELETE CASCADE foreign key from `child` to a parent.
#[derive(Debug, Clone)]
pub struct CascadeKey {
    pub child: Table,
    pub child_columns: Vec<String>,
    pub parent: Table,
    pub parent_columns: Vec<String>,
}

impl CascadeKey {
    /// `c.a = p.x AND c.b = p.y` for aliases `c` (child) and `p` (parent).
    pub fn join(&self) -> String {
        self.join_as("c", "p")
    }

    /// The same join for other aliases.
    pub fn join_as(&self, child: &str, parent: &str) -> String {
        self.child_columns
            .iter()
            .zip(&self.parent_columns)
            .map(|(c, p)| format!("{child}.{} = {parent}.{}", quote_ident(c), quote_ident(p)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// ON DELETE CASCADE keys referencing `parent` (`to_parent`) or held by
/// `child` (otherwise).
pub fn cascade_keys(relid: Oid, to_parent: bool) -> Vec<CascadeKey> {
    let side = if to_parent { "c.confrelid" } else { "c.conrelid" };
    let rows: Vec<(Oid, Oid, Vec<String>, Vec<String>)> = Spi::connect(|client| {
        let result = spi(client.select(
            &format!(
                "SELECT c.conrelid, c.confrelid,
                        ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                                JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                        ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                                JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
                   FROM pg_catalog.pg_constraint c
                  WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conparentid = 0 AND {side} = ANY ($1)
                  ORDER BY c.oid"
            ),
            None,
            &[self_and_ancestors(relid).into()],
        ));
        result
            .map(|row| {
                (
                    spi(row.get::<Oid>(1)).unwrap_or(pgrx::pg_sys::InvalidOid),
                    spi(row.get::<Oid>(2)).unwrap_or(pgrx::pg_sys::InvalidOid),
                    spi(row.get::<Vec<String>>(3)).unwrap_or_default(),
                    spi(row.get::<Vec<String>>(4)).unwrap_or_default(),
                )
            })
            .collect()
    });
    rows.into_iter()
        .filter_map(|(child, parent, child_columns, parent_columns)| {
            Some(CascadeKey {
                child: Table::lookup(child)?,
                child_columns,
                parent: Table::lookup(parent)?,
                parent_columns,
            })
        })
        .collect()
}
