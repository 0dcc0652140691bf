//! `invariants.restore(txid, tbl, since)`: puts back what a transaction (or
//! a table since a time) lost, from the audit log. Deleted, truncated and
//! purged rows are inserted again, parents before children, with identity
//! values kept and generated columns recomputed; keys that exist again are
//! skipped and reported; repaired rows get their previous values back.
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

use crate::audit_log::record_event;
use crate::catalog::{self, quote_ident, self_and_ancestors, spi, table_arg, Regclass, Table};
use crate::errors::{Code, InvariantError};
use crate::privilege::{as_extension_owner, as_table_owner, pinned, with_canonical_formats};

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

/// A capture to restore, read from the log.
struct Capture {
    id: i64,
    op: String,
    /// The names of each image's values; None for jsonb objects.
    columns: Option<Vec<String>>,
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

/// tbl, restored, skipped, table_name, problem.
type RestoreRow = (Option<Regclass>, i64, i64, String, Option<String>);

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
                )
            })
            .collect();
        for entries in order_parents_first(pending) {
            // The caller must own every table it restores into.
            table_arg(Some(Regclass(entries.table.oid)), "tbl");
            results.push(restore_table(&entries));
        }
        TableIterator::new(results)
    })
}

/// Restores one table's captures; its row of restore's result.
fn restore_table(pending: &Pending) -> RestoreRow {
    let table = &pending.table;
    let claimed = claim(&pending.captures.iter().map(|c| c.id).collect::<Vec<_>>());
    let (mut restored, mut skipped) = (0, 0);
    let mut problems = Vec::new();
    let taken = pending.captures.len() - claimed.len();
    if taken > 0 {
        problems.push(format!(
            "{taken} of its captures were restored meanwhile by another transaction"
        ));
    }
    // Removed rows first, in the order they went; then changed rows put
    // back newest first, so the earliest image of a row is the one left.
    let removed = pending
        .captures
        .iter()
        .filter(|c| claimed.contains(&c.id) && !changes(c));
    let changed = pending
        .captures
        .iter()
        .rev()
        .filter(|c| claimed.contains(&c.id) && changes(c));
    for capture in removed.chain(changed) {
        let plan = match Plan::new(table, capture) {
            Ok(plan) => plan,
            Err(problem) => {
                skipped += entry_count(&[capture.id]);
                problems.push(problem);
                continue;
            }
        };
        for_each_batch(capture.id, |batch| {
            let (r, s) = plan.apply(batch);
            restored += r;
            skipped += s;
        });
    }
    let summary = serde_json::json!({"captures": claimed, "restored": restored, "skipped": skipped});
    if !claimed.is_empty() {
        record_event("RESTORE", table, summary);
    }
    (
        Some(Regclass(table.oid)),
        restored,
        skipped,
        table.display(),
        (!problems.is_empty()).then(|| problems.join("; ")),
    )
}

/// Captures whose entries are changed rows, put back in place.
fn changes(capture: &Capture) -> bool {
    capture.op == "REPAIR" || capture.op == "UPDATE"
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
            "SELECT coalesce(sum(pg_catalog.jsonb_array_length(images)), 0)::pg_catalog.int8
               FROM invariants.audit_rows WHERE capture = ANY ($1)",
            &[captures.to_vec().into()],
        )
    })
    .unwrap_or(0)
}

/// One batch of a capture's entries, as the log holds it.
struct Batch {
    images: Option<pg_sys::Datum>,
    exact: Option<pg_sys::Datum>,
}

/// Calls `f` with each batch of the capture's entries, in order, one
/// batch in memory at a time. The log is read as the extension's owner.
fn for_each_batch(capture: i64, mut f: impl FnMut(&Batch)) {
    let ids: Vec<i64> = as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = spi(client.select(
                "SELECT first_id FROM invariants.audit_rows WHERE capture = $1 ORDER BY first_id",
                None,
                &[capture.into()],
            ));
            rows.filter_map(|row| spi(row.get::<i64>(1))).collect()
        })
    });
    for first_id in ids {
        let values = as_extension_owner(|| {
            catalog::first_row(
                "SELECT images, exact FROM invariants.audit_rows WHERE capture = $1 AND first_id = $2",
                &[capture.into(), first_id.into()],
            )
        });
        let batch = Batch {
            images: values.first().and_then(|v| v.datum),
            exact: values.get(1).and_then(|v| v.datum),
        };
        f(&batch);
        // The batch's values were copied into this function's memory;
        // nothing else holds them.
        for datum in [batch.images, batch.exact].into_iter().flatten() {
            // SAFETY: palloc'd copies made by first_row, used no more.
            unsafe { pg_sys::pfree(datum.cast_mut_ptr()) };
        }
    }
}

/// The statement that puts one capture's rows back into a table.
struct Plan {
    table: Table,
    sql: String,
    columns: Option<Vec<String>>,
}

impl Plan {
    /// The statement for `capture` on `table`, or why it cannot be run (a
    /// column the table needs, NOT NULL without a default, that the log
    /// does not hold).
    fn new(table: &Table, capture: &Capture) -> Result<Plan, String> {
        let all = catalog::columns(table.oid);
        let settings = column_settings(table.oid);
        let writable: Vec<&catalog::Column> = all
            .iter()
            .filter(|c| !c.generated)
            .filter(|c| capture.columns.as_ref().is_none_or(|logged| logged.contains(&c.name)))
            .collect();
        if let Some(logged) = &capture.columns {
            if let Some(missing) = all.iter().find(|c| {
                !c.generated
                    && !logged.contains(&c.name)
                    && settings.iter().any(|(name, required)| name == &c.name && *required)
            }) {
                return Err(format!(
                    "capture {} does not hold column \"{}\", which is NOT NULL without a default",
                    capture.id, missing.name
                ));
            }
        }
        let value = |c: &catalog::Column| -> String {
            let column = quote_ident(&c.name);
            // json keeps its own text, and jsonb its JSON null, which only
            // `exact` holds (jsonb_populate_record would read a string).
            let json_type = match base_type(c.type_oid) {
                pg_sys::JSONOID => Some("pg_catalog.json"),
                pg_sys::JSONBOID => Some("pg_catalog.jsonb"),
                _ => None,
            };
            if let Some(json_type) = json_type {
                format!(
                    "CASE WHEN x.exact ? {name} THEN (x.exact ->> {name})::{json_type}::{t} ELSE r.{column} END",
                    name = catalog::quote_literal(&c.name),
                    t = c.type_name,
                )
            } else {
                format!("r.{column}")
            }
        };
        let list: Vec<String> = writable.iter().map(|c| quote_ident(&c.name)).collect();
        let values: Vec<String> = writable.iter().map(|c| value(c)).collect();
        let source = format!(
            "pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS e(image, n)
             CROSS JOIN LATERAL (SELECT $3 -> ((e.n - 1)::pg_catalog.text) AS exact) x
             CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::{t},
                 invariants.row_data($2, e.image) || coalesce(x.exact, '{{}}')) AS r",
            t = table.qualified()
        );
        let sql = if changes(capture) {
            let key = catalog::key_columns(table.oid);
            if key.is_empty() {
                return Err(format!(
                    "{} has no primary key, so changed rows cannot be found again",
                    table.display()
                ));
            }
            let identity = identity_columns(table.oid);
            let sets: Vec<String> = writable
                .iter()
                .filter(|c| !key.contains(&c.name) && !identity.contains(&c.name))
                .map(|c| format!("{} = s.{}", quote_ident(&c.name), quote_ident(&c.name)))
                .collect();
            if sets.is_empty() {
                return Err(format!("capture {} holds no column to put back", capture.id));
            }
            let keys: Vec<String> = key.iter().map(|c| format!("s.{}", quote_ident(c))).collect();
            let matches: Vec<String> = key.iter().map(|c| format!("t.{0} = s.{0}", quote_ident(c))).collect();
            format!(
                "WITH s AS (SELECT DISTINCT ON ({keys}) {values_as}
                              FROM {source} ORDER BY {keys}, e.n),
                      done AS (UPDATE {t} AS t SET {sets} FROM s WHERE {matches} RETURNING 1)
                 SELECT (SELECT pg_catalog.count(*) FROM done), pg_catalog.jsonb_array_length($1)::pg_catalog.int8",
                keys = keys.join(", ").replace("s.", ""),
                values_as = writable
                    .iter()
                    .map(|c| format!("{} AS {}", value(c), quote_ident(&c.name)))
                    .collect::<Vec<_>>()
                    .join(", "),
                t = table.qualified(),
                sets = sets.join(", "),
                matches = matches.join(" AND "),
            )
        } else {
            format!(
                "WITH done AS (
                     INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE
                     SELECT {values} FROM {source}
                     ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT (SELECT pg_catalog.count(*) FROM done), pg_catalog.jsonb_array_length($1)::pg_catalog.int8",
                t = table.qualified(),
                list = list.join(", "),
                values = values.join(", "),
            )
        };
        Ok(Plan {
            table: table.clone(),
            sql,
            columns: capture.columns.clone(),
        })
    }

    /// Puts one batch back, as the table's owner; returns (restored, skipped).
    fn apply(&self, batch: &Batch) -> (i64, i64) {
        let jsonb = |datum| catalog::Value {
            datum,
            type_oid: pg_sys::JSONBOID,
        };
        let args = [
            jsonb(batch.images).arg(),
            self.columns.clone().into(),
            jsonb(batch.exact).arg(),
        ];
        let (done, attempted) = as_table_owner(self.table.oid, || {
            with_canonical_formats(|| spi(Spi::get_two_with_args::<i64, i64>(&self.sql, &args)))
        });
        let (done, attempted) = (done.unwrap_or(0), attempted.unwrap_or(0));
        (done, attempted - done)
    }
}

/// The base type of a domain, or the type itself.
fn base_type(type_oid: Oid) -> Oid {
    // SAFETY: a catalog lookup of an existing type.
    unsafe { pg_sys::getBaseType(type_oid) }
}

/// Each live, non-generated column: (name, NOT NULL without a default or
/// an identity).
fn column_settings(relid: Oid) -> Vec<(String, bool)> {
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
fn identity_columns(relid: Oid) -> Vec<String> {
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
    type Row = (i64, Option<Oid>, bool, String, String, String, Option<Vec<String>>);
    let rows: Vec<Row> = as_extension_owner(|| {
        Spi::connect(|client| {
            let result = spi(client.select(
                "SELECT c.id, c.tbl::pg_catalog.oid,
                        EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = c.tbl),
                        c.schema_name, c.table_name, c.op, c.columns
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
                    (
                        spi(row.get::<i64>(1)).unwrap_or_default(),
                        spi(row.get::<Oid>(2)),
                        spi(row.get::<bool>(3)).unwrap_or(false),
                        spi(row.get::<String>(4)).unwrap_or_default(),
                        spi(row.get::<String>(5)).unwrap_or_default(),
                        spi(row.get::<String>(6)).unwrap_or_default(),
                        spi(row.get::<Vec<Option<String>>>(7))
                            .map(|names| names.into_iter().map(Option::unwrap_or_default).collect()),
                    )
                })
                .collect()
        })
    });
    let mut by_table: BTreeMap<u32, Pending> = BTreeMap::new();
    let mut gone: BTreeMap<String, Gone> = BTreeMap::new();
    for (id, oid, exists, schema, name, op, columns) in rows {
        let target = match (oid, exists, only) {
            (Some(oid), true, _) => Table::lookup(oid),
            (_, false, Some(only)) => Some(only.clone()),
            _ => None,
        };
        let capture = Capture { id, op, columns };
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

/// Sorts tables so that a table comes after every table it references.
fn order_parents_first(mut pending: Vec<Pending>) -> Vec<Pending> {
    let lineage: Vec<Vec<Oid>> = pending.iter().map(|p| self_and_ancestors(p.table.oid)).collect();
    let references = |child: usize, parent: usize| -> bool {
        crate::sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint
                             WHERE contype = 'f' AND conrelid = ANY ($1) AND confrelid = ANY ($2))",
            &[lineage[child].clone().into(), lineage[parent].clone().into()],
        ) == Some(true)
    };
    let n = pending.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        // The first table none of whose unplaced parents remain; on a cycle
        // take the first unplaced one and let deferred checks sort it out.
        let next = (0..n)
            .filter(|&i| !placed[i])
            .find(|&i| (0..n).all(|j| j == i || placed[j] || !references(i, j)))
            .or_else(|| (0..n).find(|&i| !placed[i]));
        let Some(i) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    let mut slots: Vec<Option<Pending>> = pending.drain(..).map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
