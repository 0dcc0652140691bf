//! `invariants.restore(txid, tbl, since)`: puts back what a transaction (or
//! a table since a time) lost, from the audit log. Deleted, truncated and
//! purged rows are inserted again, parents before children, with identity
//! values kept and generated columns recomputed; keys that exist again are
//! skipped and reported; repaired rows get their previous values back. Each
//! restore appends a RESTORE entry naming the entries it used, so restoring
//! twice restores nothing.
use std::collections::{BTreeMap, BTreeSet};

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::JsonB;
use pgrx::{FromDatum, IntoDatum};

use crate::audit_log::record_rows;
use crate::catalog::{self, quote_ident, self_and_ancestors, spi, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, as_table_owner, pinned};

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

const BATCH: i64 = 10_000;

/// The audit entries to restore for one table.
struct Pending {
    table: Table,
    /// DELETE, TRUNCATE and PURGE entries: rows to insert again.
    removed: Vec<i64>,
    /// REPAIR entries: previous values to put back.
    repaired: Vec<i64>,
}

#[pg_extern(schema = "invariants")]
fn restore(
    txid: default!(Option<Xid8>, "NULL"),
    tbl: default!(Option<Regclass>, "NULL"),
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> TableIterator<'static, (name!(tbl, Regclass), name!(restored, i64), name!(skipped, i64))> {
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
        let pending = pending_entries(txid, only.as_ref(), since);
        let mut results = Vec::new();
        for entries in order_parents_first(pending) {
            // The caller must own every table it restores into.
            table_arg(Some(Regclass(entries.table.oid)), "tbl");
            let (mut restored, mut skipped) = (0, 0);
            for chunk in entries.removed.chunks(BATCH as usize) {
                let (r, s) = insert_again(&entries.table, images(chunk));
                restored += r;
                skipped += s;
            }
            for chunk in entries.repaired.chunks(BATCH as usize) {
                let (r, s) = put_back(&entries.table, images(chunk));
                restored += r;
                skipped += s;
            }
            let used: Vec<i64> = entries.removed.iter().chain(&entries.repaired).copied().collect();
            let summary = serde_json::json!({"entries": used, "restored": restored, "skipped": skipped});
            record_rows("RESTORE", &entries.table, vec![JsonB(summary)]);
            results.push((Regclass(entries.table.oid), restored, skipped));
        }
        TableIterator::new(results)
    })
}

/// Entries not restored yet, grouped by table. Read as the extension's
/// owner: callers need not be able to read the whole log.
fn pending_entries(
    txid: Option<Xid8>,
    only: Option<&Table>,
    since: Option<pgrx::datum::TimestampWithTimeZone>,
) -> Vec<Pending> {
    let tables: Option<Vec<Oid>> = only.map(|t| catalog::self_and_descendants(t.oid));
    let rows: Vec<(Option<Oid>, String, String, String, i64)> = as_extension_owner(|| {
        Spi::connect(|client| {
            let result = spi(client.select(
                "SELECT a.tbl::oid, a.schema_name, a.table_name, a.op, a.id
                   FROM invariants.audit_log a
                  WHERE a.op IN ('DELETE', 'TRUNCATE', 'PURGE', 'REPAIR')
                    AND ($1::xid8 IS NULL OR a.txid = $1)
                    AND ($2::oid[] IS NULL OR a.tbl::oid = ANY ($2))
                    AND ($3::timestamptz IS NULL OR a.at >= $3)
                    AND NOT EXISTS (SELECT FROM invariants.audit_log r
                                     WHERE r.op = 'RESTORE' AND r.tbl = a.tbl
                                       AND r.row_data -> 'entries' @> pg_catalog.to_jsonb(a.id))
                  ORDER BY a.id",
                None,
                &[txid.into(), tables.into(), since.into()],
            ));
            result
                .map(|row| {
                    (
                        spi(row.get::<Oid>(1)),
                        spi(row.get::<String>(2)).unwrap_or_default(),
                        spi(row.get::<String>(3)).unwrap_or_default(),
                        spi(row.get::<String>(4)).unwrap_or_default(),
                        spi(row.get::<i64>(5)).unwrap_or_default(),
                    )
                })
                .collect()
        })
    });
    let mut by_table: BTreeMap<u32, Pending> = BTreeMap::new();
    for (oid, schema, name, op, id) in rows {
        let table = oid.and_then(Table::lookup).unwrap_or_else(|| {
            InvariantError::new(
                Code::ERRCODE_UNDEFINED_TABLE,
                format!("cannot restore rows of {schema}.{name}: the table no longer exists"),
            )
            .hint(
                "Create the table again (same name and columns) and restore with tbl => the new table and since => ...",
            )
            .raise()
        });
        let entry = by_table.entry(table.oid.to_u32()).or_insert_with(|| Pending {
            table,
            removed: Vec::new(),
            repaired: Vec::new(),
        });
        if op == "REPAIR" {
            entry.repaired.push(id);
        } else {
            entry.removed.push(id);
        }
    }
    by_table.into_values().collect()
}

/// Sorts tables so that a table comes after every table it references.
fn order_parents_first(mut pending: Vec<Pending>) -> Vec<Pending> {
    let lineage: Vec<Vec<Oid>> = pending.iter().map(|p| self_and_ancestors(p.table.oid)).collect();
    let references = |child: usize, parent: usize| -> bool {
        spi(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint
                             WHERE contype = 'f' AND conrelid = ANY ($1) AND confrelid = ANY ($2))",
            &[lineage[child].clone().into(), lineage[parent].clone().into()],
        )) == Some(true)
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

/// The row images of the given entries.
fn images(ids: &[i64]) -> Vec<JsonB> {
    as_extension_owner(|| {
        Spi::connect(|client| {
            let result = spi(client.select(
                "SELECT row_data FROM invariants.audit_log WHERE id = ANY ($1) ORDER BY id",
                None,
                &[ids.to_vec().into()],
            ));
            result.filter_map(|row| spi(row.get::<JsonB>(1))).collect()
        })
    })
}

/// Columns a restore may write: live, not generated, and named in some image.
fn writable_columns(table: &Table, images: &[JsonB]) -> Vec<String> {
    let present: BTreeSet<&str> = images
        .iter()
        .filter_map(|i| i.0.as_object())
        .flat_map(|o| o.keys().map(String::as_str))
        .collect();
    let generated = spi(Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(array_agg(attname::text), '{}') FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attgenerated <> '' AND NOT attisdropped",
        &[table.oid.into()],
    ))
    .unwrap_or_default();
    catalog::columns(table.oid)
        .into_iter()
        .map(|c| c.name)
        .filter(|name| present.contains(name.as_str()) && !generated.contains(name))
        .collect()
}

/// Inserts the images again as the table's owner; returns (restored, skipped).
fn insert_again(table: &Table, images: Vec<JsonB>) -> (i64, i64) {
    if images.is_empty() {
        return (0, 0);
    }
    let columns = writable_columns(table, &images);
    let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    let values = columns
        .iter()
        .map(|c| format!("r.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH done AS (
             INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE
             SELECT {values} FROM unnest($1::jsonb[]) AS j, pg_catalog.jsonb_populate_record(NULL::{t}, j) AS r
             ON CONFLICT DO NOTHING RETURNING 1)
         SELECT count(*) FROM done",
        t = table.qualified()
    );
    let attempted = images.len() as i64;
    let inserted =
        as_table_owner(table.oid, || spi(Spi::get_one_with_args::<i64>(&sql, &[images.into()]))).unwrap_or(0);
    (inserted, attempted - inserted)
}

/// Puts repaired rows' previous values back, matching rows by key; the
/// earliest image of a row wins. Returns (restored, skipped).
fn put_back(table: &Table, images: Vec<JsonB>) -> (i64, i64) {
    let key = catalog::key_columns(table.oid);
    if key.is_empty() {
        fail(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "cannot restore repaired rows of {}: the table has no primary key",
                table.display()
            ),
        );
    }
    let identity = spi(Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(array_agg(attname::text), '{}') FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attidentity = 'a' AND NOT attisdropped",
        &[table.oid.into()],
    ))
    .unwrap_or_default();
    let columns: Vec<String> = writable_columns(table, &images)
        .into_iter()
        .filter(|c| !key.contains(c) && !identity.contains(c))
        .collect();
    if columns.is_empty() {
        return (0, images.len() as i64);
    }
    let sets = columns
        .iter()
        .map(|c| format!("{0} = r.{0}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let keys = key.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    let matches = key
        .iter()
        .map(|c| format!("t.{0} = r.{0}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "WITH done AS (
             UPDATE {t} AS t SET {sets}
               FROM (SELECT DISTINCT ON ({keys}) x.*
                       FROM unnest($1::jsonb[]) WITH ORDINALITY AS j(image, n),
                            pg_catalog.jsonb_populate_record(NULL::{t}, j.image) AS x
                      ORDER BY {keys}, j.n) AS r
              WHERE {matches}
          RETURNING 1)
         SELECT count(*) FROM done",
        t = table.qualified()
    );
    let attempted = images.len() as i64;
    let updated = as_table_owner(table.oid, || spi(Spi::get_one_with_args::<i64>(&sql, &[images.into()]))).unwrap_or(0);
    (updated, attempted - updated)
}
