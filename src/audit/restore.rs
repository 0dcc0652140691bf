//! `invariants.restore(txid, tbl, since)`: puts back what a transaction (or
//! a table since a time) lost, from the audit log. Deleted, truncated and
//! purged rows are inserted again, parents before children, with identity
//! values kept and generated columns recomputed; keys that exist again are
//! skipped and reported; repaired rows get their previous values back; the
//! changes of audited UPDATEs are reverted, newest first, where the row
//! still holds what the UPDATE wrote (the rest are reported as conflicts).
//!
//! A restore claims each capture it uses in `invariants.audit_restored`
//! (one row per capture, its primary key): restoring twice restores
//! nothing, and two sessions restoring at once restore each row once (the
//! second waits for the first, then finds its captures claimed, or at
//! REPEATABLE READ fails with a serialization error). Rows are read a batch
//! (a thousand) at a time and inserted with one statement per batch, as the
//! table's owner: time grows with the rows restored, memory with the batch,
//! whatever the size of the log or the number of earlier restores.
use std::collections::BTreeMap;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};

use super::put_back::{put_back, Capture};
use crate::audit_log::record_event;
use crate::catalog::{self, self_and_ancestors, spi, table_arg, Regclass, Table};
use crate::errors::{Code, InvariantError};
use crate::privilege::{as_extension_owner, pinned};

/// An `xid8` argument.
#[derive(Debug, Clone, Copy)]
pub struct Xid8(pub u64);

impl FromDatum for Xid8 {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: Oid) -> Option<Self> {
        (!is_null).then(|| Xid8(datum.value() as u64))
    }
}

impl IntoDatum for Xid8 {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> Oid {
        pg_sys::XID8OID
    }
}

pgrx::impl_sql_translatable!(Xid8, "xid8");

// SAFETY: an xid8 argument is a 64-bit value passed by value.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Xid8 {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null xid8 argument.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(Xid8(0))
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above; NULL becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

/// What one table gets back.
struct Pending {
    table: Table,
    captures: Vec<Capture>,
}

/// A table the log names that no longer exists.
struct Gone {
    name: String,
    captures: Vec<i64>,
}

/// tbl, restored, skipped, table_name, problem, conflicts.
type RestoreRow = (Option<Regclass>, i64, i64, String, Option<String>, pgrx::JsonB);

#[pg_extern(schema = "invariants")]
#[allow(clippy::type_complexity)]
fn restore(
    txid: default!(Option<Xid8>, "NULL"),
    tbl: default!(Option<Regclass>, "NULL"),
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(tbl, Option<Regclass>),
        name!(restored, i64),
        name!(skipped, i64),
        name!(table_name, String),
        name!(problem, Option<String>),
        name!(conflicts, pgrx::JsonB),
    ),
> {
    pinned(|| {
        // Everything the whole database ever lost is never restored by accident.
        if txid.is_none() && since.is_none() && tbl.is_none() {
            InvariantError::new(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "restore needs argument txid, tbl or since",
            )
            .hint("Pass the transaction that lost the rows (txid => ...), a table (tbl => ...), or since => a time.")
            .raise();
        }
        let only = tbl.map(|t| table_arg(Some(t), "tbl"));
        let (pending, gone) = pending_captures(txid, only.as_ref(), since);
        let mut results: Vec<RestoreRow> = gone
            .into_iter()
            .map(|g| {
                let entries = entry_count(&g.captures);
                (
                    None,
                    0,
                    entries,
                    g.name.clone(),
                    Some(format!(
                        "table {} no longer exists: create it again (same name and columns), then call invariants.restore(tbl => '{}', ...)",
                        g.name, g.name
                    )),
                    pgrx::JsonB(serde_json::json!([])),
                )
            })
            .collect();
        let pending = order_parents_first(pending);
        // The caller must own every table it restores into.
        for entries in &pending {
            table_arg(Some(Regclass(entries.table.oid)), "tbl");
        }
        results.extend(restore_tables(&pending));
        TableIterator::new(results)
    })
}

/// What restoring one table's captures did so far.
#[derive(Default)]
struct Tally {
    claimed: Vec<i64>,
    restored: i64,
    skipped: i64,
    conflicts: Vec<serde_json::Value>,
    problems: Vec<String>,
}

/// Restores the tables' captures (parents first); one row of restore's
/// result per table. Removed rows go back first, table by table, in the
/// order they went; then changed rows are put back newest first across
/// all the tables, so that a row changed through a partitioned table and
/// then through its partition goes back step by step, and the earliest
/// image of each row is the one left.
fn restore_tables(pending: &[Pending]) -> Vec<RestoreRow> {
    let mut tallies: Vec<Tally> = pending
        .iter()
        .map(|p| {
            let claimed = claim(&p.captures.iter().map(|c| c.id).collect::<Vec<_>>());
            let mut tally = Tally::default();
            let taken = p.captures.len() - claimed.len();
            if taken > 0 {
                tally.problems.push(format!(
                    "{taken} of its captures were restored meanwhile by another transaction"
                ));
            }
            tally.claimed = claimed;
            tally
        })
        .collect();
    let mut changed: Vec<(usize, &Capture)> = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        let claimed = tallies[i].claimed.clone();
        for capture in p.captures.iter().filter(|c| claimed.contains(&c.id)) {
            if capture.changes() {
                changed.push((i, capture));
            } else {
                tally_outcome(&mut tallies[i], put_back(&p.table, capture));
            }
        }
    }
    changed.sort_by_key(|(_, capture)| std::cmp::Reverse(capture.id));
    for (i, capture) in changed {
        tally_outcome(&mut tallies[i], put_back(&pending[i].table, capture));
    }
    pending
        .iter()
        .zip(tallies)
        .map(|(p, tally)| {
            let table = &p.table;
            if !tally.claimed.is_empty() {
                let summary = serde_json::json!({
                    "captures": tally.claimed, "restored": tally.restored, "skipped": tally.skipped,
                    "conflicts": tally.conflicts.len()
                });
                record_event("RESTORE", table, summary);
            }
            (
                Some(Regclass(table.oid)),
                tally.restored,
                tally.skipped,
                table.display(),
                (!tally.problems.is_empty()).then(|| tally.problems.join("; ")),
                pgrx::JsonB(serde_json::Value::Array(tally.conflicts)),
            )
        })
        .collect()
}

fn tally_outcome(tally: &mut Tally, outcome: super::put_back::Outcome) {
    tally.restored += outcome.restored;
    tally.skipped += outcome.skipped;
    tally.conflicts.extend(outcome.conflicts);
    tally.problems.extend(outcome.problem);
}

/// Claims the captures for this transaction's restore; returns those it
/// got (not restored before, by anyone).
fn claim(captures: &[i64]) -> Vec<i64> {
    if captures.is_empty() {
        return Vec::new();
    }
    as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let rows = spi(client.update(
                "INSERT INTO invariants.audit_restored (capture, txid)
                 SELECT c, pg_catalog.pg_current_xact_id() FROM pg_catalog.unnest($1::pg_catalog.int8[]) c
                 ON CONFLICT DO NOTHING RETURNING capture",
                None,
                &[captures.to_vec().into()],
            ));
            rows.filter_map(|row| spi(row.get::<i64>(1))).collect()
        })
    })
}

/// How many entries the captures hold.
fn entry_count(captures: &[i64]) -> i64 {
    as_extension_owner(|| {
        crate::sql::one::<i64>(
            "SELECT coalesce(sum(entries), 0)::pg_catalog.int8 FROM invariants.audit_rows WHERE capture = ANY ($1)",
            &[captures.to_vec().into()],
        )
    })
    .unwrap_or(0)
}

/// Each live, non-generated column: (name, NOT NULL without a default or
/// an identity).
pub fn column_settings(relid: Oid) -> Vec<(String, bool)> {
    Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT attname::text, attnotnull AND NOT atthasdef AND attidentity = ''
               FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
            None,
            &[relid.into()],
        ));
        rows.map(|row| {
            (
                spi(row.get::<String>(1)).unwrap_or_default(),
                spi(row.get::<bool>(2)).unwrap_or(false),
            )
        })
        .collect()
    })
}

/// The identity columns of `relid` (GENERATED ALWAYS AS IDENTITY).
pub fn identity_columns(relid: Oid) -> Vec<String> {
    crate::sql::one::<Vec<String>>(
        "SELECT coalesce(array_agg(attname::text), '{}') FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attidentity = 'a' AND NOT attisdropped",
        &[relid.into()],
    )
    .unwrap_or_default()
}

/// The captures not restored yet, grouped by the table they go back into;
/// and those of tables that no longer exist. A table restored by name
/// (`only`) also gets what a dropped table of the same name lost. Read as
/// the extension's owner: callers need not be able to read the whole log.
fn pending_captures(
    txid: Option<Xid8>,
    only: Option<&Table>,
    since: Option<pgrx::datum::TimestampWithTimeZone>,
) -> (Vec<Pending>, Vec<Gone>) {
    let tables: Option<Vec<Oid>> = only.map(|t| catalog::self_and_descendants(t.oid));
    let (schema, name) = only.map_or((None, None), |t| (Some(t.schema.clone()), Some(t.name.clone())));
    type Row = (Option<Oid>, bool, String, String, Capture);
    let rows: Vec<Row> = as_extension_owner(|| {
        Spi::connect(|client| {
            let result = spi(client.select(
                "SELECT c.id, c.tbl::pg_catalog.oid,
                        EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = c.tbl),
                        c.schema_name, c.table_name, c.op, c.columns, c.types, c.formats, c.parts,
                        (SELECT coalesce(sum(r.entries), 0)::pg_catalog.int8
                           FROM invariants.audit_rows r WHERE r.capture = c.id)
                   FROM invariants.audit_capture c
                  WHERE c.op IN ('DELETE', 'TRUNCATE', 'PURGE', 'REPAIR', 'UPDATE')
                    AND ($1::pg_catalog.xid8 IS NULL OR c.txid = $1)
                    AND ($2::pg_catalog.oid[] IS NULL OR c.tbl::pg_catalog.oid = ANY ($2)
                         OR (c.schema_name = $3 AND c.table_name = $4
                             AND NOT EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = c.tbl)))
                    AND ($5::pg_catalog.timestamptz IS NULL OR c.at >= $5)
                    AND NOT EXISTS (SELECT FROM invariants.audit_restored r WHERE r.capture = c.id)
                  ORDER BY c.id",
                None,
                &[txid.into(), tables.into(), schema.into(), name.into(), since.into()],
            ));
            result
                .map(|row| {
                    let id = spi(row.get::<i64>(1)).unwrap_or_default();
                    (
                        spi(row.get::<Oid>(2)),
                        spi(row.get::<bool>(3)).unwrap_or(false),
                        spi(row.get::<String>(4)).unwrap_or_default(),
                        spi(row.get::<String>(5)).unwrap_or_default(),
                        Capture {
                            id,
                            op: spi(row.get::<String>(6)).unwrap_or_default(),
                            columns: spi(row.get::<Vec<Option<String>>>(7))
                                .map(|names| names.into_iter().map(Option::unwrap_or_default).collect()),
                            types: spi(row.get::<Vec<Oid>>(8)).unwrap_or_default(),
                            formats: spi(row.get::<String>(9)).unwrap_or_default(),
                            parts: spi(row.get::<String>(10)),
                            entries: spi(row.get::<i64>(11)).unwrap_or_default(),
                        },
                    )
                })
                .collect()
        })
    });
    let mut by_table: BTreeMap<u32, Pending> = BTreeMap::new();
    let mut gone: BTreeMap<String, Gone> = BTreeMap::new();
    // Each table is looked up once, however many captures it has.
    let mut tables: std::collections::HashMap<u32, Option<Table>> = std::collections::HashMap::new();
    for (oid, exists, schema, name, capture) in rows {
        let target = match (oid, exists, only) {
            (Some(oid), true, _) => tables.entry(oid.to_u32()).or_insert_with(|| Table::lookup(oid)).clone(),
            (_, false, Some(only)) => Some(only.clone()),
            _ => None,
        };
        match target {
            Some(table) => by_table
                .entry(table.oid.to_u32())
                .or_insert_with(|| Pending {
                    table,
                    captures: Vec::new(),
                })
                .captures
                .push(capture),
            None => {
                let display = format!("{schema}.{name}");
                gone.entry(display.clone())
                    .or_insert_with(|| Gone {
                        name: display,
                        captures: Vec::new(),
                    })
                    .captures
                    .push(capture.id);
            }
        }
    }
    (by_table.into_values().collect(), gone.into_values().collect())
}

/// Sorts tables so that a table comes after every table it references
/// (on a cycle of references, deferred checks sort out the rest).
fn order_parents_first(mut pending: Vec<Pending>) -> Vec<Pending> {
    let lineage: Vec<Vec<Oid>> = pending.iter().map(|p| self_and_ancestors(p.table.oid)).collect();
    let references = |child: usize, parent: usize| -> bool {
        crate::sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint
                             WHERE contype = 'f' AND conrelid = ANY ($1) AND confrelid = ANY ($2))",
            &[lineage[child].clone().into(), lineage[parent].clone().into()],
        ) == Some(true)
    };
    let order = pg_invariants_core::order::parents_first(pending.len(), references).order;
    let mut slots: Vec<Option<Pending>> = pending.drain(..).map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
