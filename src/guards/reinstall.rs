//! `invariants.reinstall_triggers()` and `invariants.forget_dropped_tables()`:
//! the fixes `lint()` and `health()` point to.
use pgrx::prelude::*;

use crate::catalog::{spi, table_arg, Regclass, Table};
use crate::privilege::{as_extension_owner, pinned};
use crate::registry;

/// Makes the extension's triggers on `tbl` (and the tables below it), or on
/// every table the caller owns when NULL, what its declarations need:
/// missing, disabled, renamed or replaced triggers are created again.
/// Returns how many tables it went through.
#[pg_extern(schema = "invariants")]
fn reinstall_triggers(tbl: default!(Option<Regclass>, "NULL")) -> i32 {
    pinned(|| {
        let tables: Vec<pgrx::pg_sys::Oid> = match tbl {
            Some(tbl) => crate::catalog::self_and_descendants(table_arg(Some(tbl), "tbl").oid),
            None => registry::covered_tables()
                .into_iter()
                .filter(|relid| Table::lookup(*relid).is_some_and(|t| crate::guards::is_owner(&t)))
                .collect(),
        };
        for relid in &tables {
            registry::sync(*relid);
        }
        tables.len() as i32
    })
}

/// Removes the settings (rules, audit, protection, soft delete) of tables
/// that no longer exist; returns how many.
#[pg_extern(schema = "invariants")]
fn forget_dropped_tables() -> i64 {
    pinned(|| {
        as_extension_owner(|| {
            [
                "rule_definitions",
                "audited_tables",
                "protected_tables",
                "soft_delete_tables",
            ]
            .iter()
            .map(|table| {
                spi(Spi::get_one::<i64>(&format!(
                    "WITH gone AS (DELETE FROM invariants.{table} s
                                        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.tbl)
                                        RETURNING 1)
                         SELECT count(*) FROM gone"
                )))
                .unwrap_or(0)
            })
            .sum()
        })
    })
}
