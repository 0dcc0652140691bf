//! `invariants.purge(tbl, older_than)`: the only way to hard-delete rows of
//! a soft-delete table. Rows soft-deleted longer ago than `older_than` go,
//! their soft-delete cascade children first; every purged row is copied to
//! the audit log as op PURGE.
use std::rc::Rc;

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::JsonB;

use super::soft_delete::while_purging;
use super::{cascade_keys, soft_delete_column};
use crate::audit_log::record_rows;
use crate::catalog::{quote_ident, spi, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};

/// A SQL condition on the rows of a table, given the alias it is read under.
type Condition = Rc<dyn Fn(&str) -> String>;

#[pg_extern(schema = "invariants")]
fn purge(tbl: Option<Regclass>, older_than: default!(Option<Interval>, "'30 days'")) -> i64 {
    let table = table_arg(tbl, "tbl");
    let Some(older_than) = older_than else {
        fail(
            Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "argument older_than must not be NULL",
        )
    };
    if spi(Spi::get_one_with_args::<bool>(
        "SELECT $1 < interval '0'",
        &[older_than.into()],
    )) == Some(true)
    {
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
    let cutoff = spi(Spi::get_one_with_args::<String>(
        "SELECT (pg_catalog.now() - $1)::text",
        &[older_than.into()],
    ))
    .unwrap_or_default();
    let cutoff_sql = crate::catalog::quote_literal(&cutoff);
    let condition: Condition =
        Rc::new(move |alias: &str| format!("{alias}.{} < {cutoff_sql}::timestamptz", quote_ident(&column)));
    purge_rows(&table, &condition)
}

/// Purges the rows of `table` meeting `condition`, children first.
fn purge_rows(table: &Table, condition: &Condition) -> i64 {
    for key in cascade_keys(table.oid, true) {
        let Some(child_column) = soft_delete_column(key.child.oid) else {
            continue;
        };
        let parent_sql = key.parent.qualified();
        let child_key = key.clone();
        let parent_condition = condition.clone();
        let child_condition: Condition = Rc::new(move |alias: &str| {
            // A fresh alias per level, so nested conditions do not shadow.
            let parent_alias = format!("{alias}_p");
            format!(
                "EXISTS (SELECT FROM {parent_sql} {parent_alias} WHERE {} AND {})",
                child_key.join_as(alias, &parent_alias),
                parent_condition(&parent_alias)
            )
        });
        let live = spi(Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM {} c WHERE {} AND c.{} IS NULL",
            key.child.qualified(),
            child_condition("c"),
            quote_ident(&child_column)
        )))
        .unwrap_or(0);
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
        purge_rows(&key.child, &child_condition);
    }
    let sql = format!(
        "DELETE FROM {} t WHERE {} RETURNING pg_catalog.to_jsonb(t.*)",
        table.qualified(),
        condition("t")
    );
    let images: Vec<JsonB> = while_purging(table, || {
        Spi::connect_mut(|client| {
            let result = spi(client.update(&sql, None, &[]));
            result.filter_map(|row| spi(row.get::<JsonB>(1))).collect()
        })
    });
    let purged = images.len() as i64;
    record_rows("PURGE", table, images);
    purged
}
