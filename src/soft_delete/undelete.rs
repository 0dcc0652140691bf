//! `invariants.undelete(tbl, since)`: brings back the rows of `tbl`
//! soft-deleted since `since`, and the cascade children that were
//! soft-deleted with them (same timestamp), at any depth.
use std::collections::HashSet;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use super::{cascade_keys, soft_delete_column, CascadeKey};
use crate::catalog::{quote_ident, spi, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};

/// Returns how many rows of `tbl` itself came back.
#[pg_extern(schema = "invariants")]
fn undelete(tbl: Option<Regclass>, since: Option<TimestampWithTimeZone>) -> i64 {
    let table = table_arg(tbl, "tbl");
    let Some(since) = since else {
        fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument since must not be NULL")
    };
    let Some(column) = soft_delete_column(table.oid) else {
        InvariantError::new(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{} is not a soft-delete table", table.display()),
        )
        .raise();
    };
    // The cascade tree, parents before children.
    let mut keys: Vec<(CascadeKey, String, String)> = Vec::new();
    let mut seen: HashSet<Oid> = HashSet::from([table.oid]);
    let mut frontier = vec![(table.oid, column.clone())];
    while let Some((parent, parent_column)) = frontier.pop() {
        for key in cascade_keys(parent, true) {
            let Some(child_column) = soft_delete_column(key.child.oid) else {
                continue;
            };
            if seen.insert(key.child.oid) {
                frontier.push((key.child.oid, child_column.clone()));
            }
            keys.push((key, child_column, parent_column.clone()));
        }
    }
    // Deepest first, so that each parent still shows when it was deleted.
    for (key, child_column, parent_column) in keys.iter().rev() {
        table_arg(Some(Regclass(key.child.oid)), "tbl");
        let sql = format!(
            "UPDATE {} c SET {cc} = NULL
              WHERE c.{cc} >= $1
                AND EXISTS (SELECT FROM {} p WHERE {} AND p.{pc} = c.{cc} AND p.{pc} >= $1)",
            key.child.qualified(),
            key.parent.qualified(),
            key.join(),
            cc = quote_ident(child_column),
            pc = quote_ident(parent_column),
        );
        spi(Spi::run_with_args(&sql, &[since.into()]));
    }
    spi(Spi::get_one_with_args::<i64>(
        &format!(
            "WITH back AS (UPDATE {} SET {c} = NULL WHERE {c} >= $1 RETURNING 1) SELECT count(*) FROM back",
            table.qualified(),
            c = quote_ident(&column)
        ),
        &[since.into()],
    ))
    .unwrap_or(0)
}
