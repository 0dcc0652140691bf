//! `invariants.undelete(tbl, since)`: brings back the rows of `tbl`
//! soft-deleted since `since`, and the cascade children that were
//! soft-deleted with them (same timestamp), at any depth.
use std::collections::HashSet;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use super::tree::RowSet;
use super::{cascade_keys, soft_delete_column};
use crate::catalog::{quote_ident, quote_literal, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{pinned, with_canonical_formats};

/// Returns how many rows of `tbl` itself came back.
#[pg_extern(schema = "invariants")]
fn undelete(tbl: Option<Regclass>, since: Option<TimestampWithTimeZone>) -> i64 {
    pinned(|| {
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
        let since_literal = with_canonical_formats(|| crate::sql::one::<String>("SELECT $1::text", &[since.into()]))
            .map(|text| format!("{}::pg_catalog.timestamptz", quote_literal(&text)))
            .unwrap_or_default();
        let root = RowSet::new(
            &table,
            format!("t.{} >= {since_literal}", quote_ident(&column)),
            Vec::new(),
        );
        // The rows to bring back, table by table down the cascade tree, all
        // read before any changes: children deleted with their parent (at
        // the same time), since `since`.
        let mut sets = Vec::new();
        let mut seen: HashSet<Oid> = HashSet::from([table.oid]);
        let mut frontier = vec![(root, column.clone())];
        while let Some((parent, parent_column)) = frontier.pop() {
            for key in cascade_keys(parent.table.oid, true) {
                let Some(child_column) = soft_delete_column(key.child.oid) else {
                    continue;
                };
                if !seen.insert(key.child.oid) {
                    continue;
                }
                table_arg(Some(Regclass(key.child.oid)), "tbl");
                let cc = quote_ident(&child_column);
                let also = format!("t.{}", quote_ident(&parent_column));
                let extra = format!("t.{cc} OPERATOR(pg_catalog.=) k.x0 AND t.{cc} >= {since_literal}");
                if let Some(children) = parent.children(&key, &[also.as_str()], &extra) {
                    frontier.push((children, child_column));
                }
            }
            sets.push((parent, parent_column));
        }
        let mut undeleted = 0;
        for (rows, column) in sets.iter().rev() {
            let back: Vec<i32> = rows.change(&format!("SET {} = NULL", quote_ident(column)), "1");
            if rows.table.oid == table.oid {
                undeleted = back.len() as i64;
            }
        }
        undeleted
    })
}
