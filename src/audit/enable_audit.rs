//! `invariants.enable_audit` and `invariants.disable_audit`: install and
//! remove the capture triggers on a table (and each of its partitions, so
//! that a DELETE or TRUNCATE naming a partition is captured as well).
use pgrx::prelude::*;

use crate::catalog::{column_arg, key_columns, spi, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, pinned};
use crate::registry::{self, Trigger};
use pg_invariants_core::triggers;
use pgrx::pg_sys::Oid;

/// Starts capturing every row removed from `tbl` by DELETE or TRUNCATE,
/// and with `updates` the changed columns of every row an UPDATE changes.
/// The columns in `exclude` are never written to the log. Calling it again
/// replaces the settings and installs the triggers on partitions attached
/// since.
#[pg_extern(schema = "invariants")]
fn enable_audit(
    tbl: Option<Regclass>,
    truncate_capture_limit: default!(Option<i64>, "1000000"),
    updates: default!(Option<bool>, "false"),
    exclude: default!(Option<Vec<Option<String>>>, "'{}'"),
) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let limit = match truncate_capture_limit {
            None => fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument truncate_capture_limit must not be NULL",
            ),
            Some(limit) if limit < 0 => InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument truncate_capture_limit must not be negative",
            )
            .hint(
                "It is the most rows a TRUNCATE may remove (and copy first); 0 refuses any TRUNCATE of a non-empty table.",
            )
            .raise(),
            Some(limit) => limit,
        };
        let Some(updates) = updates else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument updates must not be NULL",
            );
        };
        let exclude = excluded_arg(&table, exclude, updates);
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "INSERT INTO invariants.audited_tables (tbl, truncate_capture_limit, updates, exclude, enabled_by)
                 VALUES ($1, $2, $3, $4, session_user)
                 ON CONFLICT (tbl) DO UPDATE SET truncate_capture_limit = EXCLUDED.truncate_capture_limit,
                     updates = EXCLUDED.updates, exclude = EXCLUDED.exclude",
                &[Regclass(table.oid).into(), limit.into(), updates.into(), exclude.into()],
            ))
        });
        registry::sync_tree(table.oid);
    })
}

/// The `exclude` argument checked: columns of the table (each once), and,
/// when UPDATEs are captured, none of the key that finds a row again.
fn excluded_arg(table: &Table, exclude: Option<Vec<Option<String>>>, updates: bool) -> Vec<String> {
    let Some(names) = exclude else {
        fail(
            Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "argument exclude must not be NULL",
        );
    };
    let mut columns: Vec<String> = Vec::new();
    for name in names {
        let Some(name) = name else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument exclude must not contain NULL",
            );
        };
        let column = column_arg(table, &name, "exclude");
        if !columns.contains(&column.name) {
            columns.push(column.name);
        }
    }
    if updates {
        let key = key_columns(table.oid);
        if key.is_empty() {
            InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "{} has no primary key, so its updated rows could not be found again",
                    table.display()
                ),
            )
            .hint("Add a primary key (or a unique index on NOT NULL columns), then enable the audit of UPDATEs.")
            .table(&table.schema, &table.name)
            .raise();
        }
        if let Some(name) = columns.iter().find(|c| key.contains(c)) {
            InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "column \"{name}\" of {} cannot be excluded: it is part of the key that finds updated rows again",
                    table.display()
                ),
            )
            .hint("Exclude other columns, or audit without updates => true.")
            .table(&table.schema, &table.name)
            .raise();
        }
    }
    columns
}

/// Stops capturing; entries already in the log stay. Harmless when the
/// table is not audited.
#[pg_extern(schema = "invariants")]
fn disable_audit(tbl: Option<Regclass>) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        if crate::guards::is_protected(table.oid) {
            InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{} is protected, and its guards need its audit", table.display()),
            )
            .hint(format!("Call invariants.unprotect('{}') first.", table.display()))
            .raise();
        }
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "DELETE FROM invariants.audited_tables WHERE tbl = $1",
                &[Regclass(table.oid).into()],
            ))
        });
        registry::sync_tree(table.oid);
    })
}

/// The capture triggers of DELETE (and of UPDATE when asked), for a table
/// audited itself or through a table above it. (TRUNCATE is captured by
/// the truncate guard.)
pub fn triggers(relid: Oid, _lineage: &[Oid]) -> Vec<Trigger> {
    let Some(settings) = super::settings(relid) else {
        return Vec::new();
    };
    let mut needed = vec![triggers::AUDIT_DELETE.on_table()];
    if settings.updates {
        needed.push(triggers::AUDIT_UPDATE.on_table());
    }
    // TRUNCATE is captured (when the table is neither protected nor
    // soft-delete: then the guard that refuses it comes first).
    needed.push(Trigger {
        capability: "audit",
        ..triggers::TRUNCATE_GUARD.on_table()
    });
    needed
}
