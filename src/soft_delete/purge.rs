//! `invariants.purge(tbl, older_than)`: the only way to hard-delete rows of
//! a soft-delete table. Rows soft-deleted longer ago than `older_than` go,
//! their soft-delete cascade children first; every purged row is copied to
//! the audit log as op PURGE.
use pgrx::datum::Interval;
use pgrx::prelude::*;

use super::soft_delete::while_purging;
use super::tree::RowSet;
use super::{cascade_keys, soft_delete_column};
use crate::catalog::{first_row, quote_ident, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::pinned;

#[pg_extern(schema = "invariants")]
fn purge(tbl: Option<Regclass>, older_than: default!(Option<Interval>, "'30 days'")) -> i64 {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let Some(older_than) = older_than else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument older_than must not be NULL",
            )
        };
        if crate::sql::one::<bool>("SELECT $1 < interval '0'", &[older_than.into()]) == Some(true) {
            fail(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument older_than must not be negative",
            );
        }
        let Some(column) = soft_delete_column(table.oid) else {
            InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{} is not a soft-delete table", table.display()),
            )
            .hint("purge hard-deletes soft-deleted rows; for other tables use DELETE.")
            .raise();
        };
        let cutoff = first_row("SELECT pg_catalog.now() - $1", &[older_than.into()]);
        let rows = RowSet::new(&table, format!("t.{} < $1", quote_ident(&column)), cutoff);
        purge_rows(&rows)
    })
}

/// Purges `rows`, their soft-delete cascade children first. Refused when a
/// child that is not deleted references them.
fn purge_rows(rows: &RowSet) -> i64 {
    let table = &rows.table;
    for key in cascade_keys(table.oid, true) {
        let Some(child_column) = soft_delete_column(key.child.oid) else {
            continue;
        };
        let Some(children) = rows.children(&key, &[], "true") else {
            continue;
        };
        let live = children.count_where(&format!("t.{} IS NULL", quote_ident(&child_column)));
        if live > 0 {
            InvariantError::new(
                Code::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!(
                    "purge of {} refused: {live} rows of {} that are not deleted reference the rows to purge",
                    table.display(),
                    key.child.display()
                ),
            )
            .hint(format!(
                "Delete those {} rows first, or purge with a longer older_than.",
                key.child.display()
            ))
            .raise();
        }
        table_arg(Some(Regclass(key.child.oid)), "tbl");
        purge_rows(&children);
    }
    rows.capture("PURGE");
    let purged: Vec<i32> = while_purging(table, || rows.change("DELETE", "1"));
    purged.len() as i64
}
