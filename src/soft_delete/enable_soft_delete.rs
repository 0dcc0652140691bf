//! `invariants.enable_soft_delete` and `invariants.disable_soft_delete`.
use std::collections::HashSet;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use super::cascade_keys;
use crate::catalog::{invalidate, quote_ident, spi, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, pinned};
use crate::registry::{self, Trigger};
use pg_invariants_core::triggers;

/// Makes DELETE on `tbl` set `column` to now() instead. With `cascade`, the
/// tables that reference it through ON DELETE CASCADE (at any depth) become
/// soft-delete tables too, and are soft-deleted with it. With `hide`,
/// soft-deleted rows are invisible to every role but the owner (see
/// `hide_deleted_rows`). Calling it again is harmless.
#[pg_extern(schema = "invariants")]
fn enable_soft_delete(
    tbl: Option<Regclass>,
    column: default!(Option<&str>, "'deleted_at'"),
    cascade: default!(Option<bool>, "true"),
    hide: default!(Option<bool>, "false"),
) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let Some(column) = column else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument column must not be NULL")
        };
        let Some(cascade) = cascade else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument cascade must not be NULL",
            )
        };
        let Some(hide) = hide else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument hide must not be NULL")
        };
        // Validate the whole cascade first, so nothing changes on an error.
        let mut tables = vec![(table.clone(), None::<Table>)];
        if cascade {
            let mut seen: HashSet<Oid> = HashSet::from([table.oid]);
            let mut i = 0;
            while i < tables.len() {
                for key in cascade_keys(tables[i].0.oid, true) {
                    if seen.insert(key.child.oid) {
                        tables.push((key.child.clone(), Some(key.parent.clone())));
                    }
                }
                i += 1;
            }
        }
        for (t, parent) in &tables {
            check_column(t, column, parent.as_ref());
            if parent.is_some() {
                table_arg(Some(Regclass(t.oid)), "tbl");
            }
        }
        for (t, _) in &tables {
            let rls_added = if hide {
                hide_deleted_rows(t, column)
            } else {
                unhide_deleted_rows(t)
            };
            as_extension_owner(|| {
                spi(Spi::run_with_args(
                    "INSERT INTO invariants.soft_delete_tables (tbl, column_name, \"cascade\", hide, rls_added, enabled_by)
                     VALUES ($1, $2, $3, $4, $5, session_user)
                     ON CONFLICT (tbl) DO UPDATE SET column_name = EXCLUDED.column_name, \"cascade\" = EXCLUDED.\"cascade\",
                                                     hide = EXCLUDED.hide, rls_added = EXCLUDED.rls_added",
                    &[
                        Regclass(t.oid).into(),
                        column.into(),
                        cascade.into(),
                        hide.into(),
                        rls_added.into(),
                    ],
                ))
            });
            registry::sync_tree(t.oid);
            forget_parents(t);
        }
    })
}

/// Parents cache how they cascade into their children: make every backend
/// read it again.
fn forget_parents(table: &Table) {
    for key in cascade_keys(table.oid, false) {
        invalidate(key.parent.oid);
    }
    invalidate(table.oid);
}

fn check_column(table: &Table, column: &str, parent: Option<&Table>) {
    let found = crate::catalog::columns(table.oid)
        .into_iter()
        .find(|c| c.name == column);
    let via = parent.map_or(String::new(), |p| {
        format!(" (it references {} through ON DELETE CASCADE)", p.display())
    });
    match found {
        None => InvariantError::new(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "argument column: table {} has no column \"{column}\"{via}",
                table.display()
            ),
        )
        .hint(format!(
            "Add it: ALTER TABLE {} ADD COLUMN {} timestamptz; or enable with cascade => false.",
            table.display(),
            quote_ident(column)
        ))
        .raise(),
        Some(c) if c.type_oid != pgrx::pg_sys::TIMESTAMPTZOID => InvariantError::new(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "argument column: column \"{column}\" of table {} is of type {}, not timestamp with time zone{via}",
                table.display(),
                c.type_name
            ),
        )
        .raise(),
        Some(_) => {}
    }
}

const HIDE_POLICY: &str = "invariants_hide_deleted";
const ALLOW_POLICY: &str = "invariants_soft_delete_allow";

fn has_policy(table: &Table, name: &str) -> bool {
    crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polrelid = $1 AND polname = $2)",
        &[table.oid.into(), name.into()],
    ) == Some(true)
}

/// Hides soft-deleted rows from every role but the owner (and superusers
/// and BYPASSRLS roles): a restrictive row-level security policy lets other
/// roles read only rows whose `column` is NULL. If the table had no RLS, it
/// is switched on with a permissive policy that keeps every other access as
/// it was; otherwise the restrictive policy narrows the table's own
/// policies. Returns whether RLS was switched on here.
fn hide_deleted_rows(table: &Table, column: &str) -> bool {
    let rls_on = crate::sql::one::<bool>(
        "SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = $1",
        &[table.oid.into()],
    ) == Some(true);
    let previously_added = crate::sql::one::<bool>(
        "SELECT coalesce((SELECT rls_added FROM invariants.soft_delete_tables WHERE tbl = $1), false)",
        &[Regclass(table.oid).into()],
    ) == Some(true);
    if has_policy(table, HIDE_POLICY) {
        // It names the column: recreate it, in case that changed.
        spi(Spi::run(&format!(
            "DROP POLICY {} ON {}",
            quote_ident(HIDE_POLICY),
            table.qualified()
        )));
    }
    {
        spi(Spi::run(&format!(
            "CREATE POLICY {} ON {} AS RESTRICTIVE FOR SELECT USING ({} IS NULL)",
            quote_ident(HIDE_POLICY),
            table.qualified(),
            quote_ident(column)
        )));
    }
    if rls_on {
        return previously_added;
    }
    if !has_policy(table, ALLOW_POLICY) {
        spi(Spi::run(&format!(
            "CREATE POLICY {} ON {} USING (true) WITH CHECK (true)",
            quote_ident(ALLOW_POLICY),
            table.qualified()
        )));
    }
    spi(Spi::run(&format!(
        "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
        table.qualified()
    )));
    true
}

/// Undoes `hide_deleted_rows`; returns false (RLS no longer added here).
fn unhide_deleted_rows(table: &Table) -> bool {
    let rls_added = crate::sql::one::<bool>(
        "SELECT coalesce((SELECT rls_added FROM invariants.soft_delete_tables WHERE tbl = $1), false)",
        &[Regclass(table.oid).into()],
    ) == Some(true);
    for policy in [HIDE_POLICY, ALLOW_POLICY] {
        if has_policy(table, policy) {
            spi(Spi::run(&format!(
                "DROP POLICY {} ON {}",
                quote_ident(policy),
                table.qualified()
            )));
        }
    }
    if rls_added {
        spi(Spi::run(&format!(
            "ALTER TABLE {} DISABLE ROW LEVEL SECURITY",
            table.qualified()
        )));
    }
    false
}

/// The soft-delete triggers of a soft-delete table (itself or through a
/// table above it).
pub fn triggers(relid: Oid, _lineage: &[Oid]) -> Vec<Trigger> {
    let Some(column) = super::soft_delete_column(relid) else {
        return Vec::new();
    };
    let mut needed = vec![
        triggers::SOFT_DELETE_ROW.on_table(),
        triggers::SOFT_DELETE_APPLY.on_table(),
    ];
    // Only partitions move rows (UPDATE of the partition key): elsewhere
    // the soft delete's own UPDATE need not pay for this trigger.
    let partitioned = crate::sql::one::<bool>(
        "SELECT relkind = 'p' OR relispartition FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ) == Some(true);
    if partitioned {
        needed.push(triggers::SOFT_DELETE_UPDATE.on_table());
    }
    // With its column gone, DELETE is refused by the row trigger; there is
    // nothing to cascade, and no deleted row to keep.
    if crate::catalog::columns(relid).iter().any(|c| c.name == column) {
        // A deleted row stays deleted: an UPDATE that reaches it changes
        // nothing. Called only for such rows (the WHEN condition is
        // evaluated by the executor).
        needed.push(Trigger {
            when_old_set: Some(column.clone()),
            ..triggers::SOFT_DELETE_KEEP.on_table()
        });
        needed.push(Trigger {
            columns: vec![column],
            ..triggers::SOFT_DELETE_CASCADE.on_table()
        });
    }
    // TRUNCATE is refused (when the table is not protected: then the
    // guards' refusal comes first).
    needed.push(Trigger {
        capability: "soft delete",
        ..triggers::TRUNCATE_GUARD.on_table()
    });
    needed
}

/// DELETE on `tbl` deletes again. Its rows keep their deleted_at; tables
/// enabled through its cascade stay soft-delete tables. Harmless when not
/// enabled.
#[pg_extern(schema = "invariants")]
fn disable_soft_delete(tbl: Option<Regclass>) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        unhide_deleted_rows(&table);
        forget_parents(&table);
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "DELETE FROM invariants.soft_delete_tables WHERE tbl = $1",
                &[Regclass(table.oid).into()],
            ))
        });
        registry::sync_tree(table.oid);
    })
}
