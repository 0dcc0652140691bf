//! Putting one capture's rows back into a table, as its owner.
//!
//! Removed rows (DELETE, TRUNCATE, PURGE) of a capture whose columns still
//! have their types go back through COPY FROM in binary format, fed the
//! log's images as they are (fields of columns dropped since are left out):
//! as fast as a plain COPY, with the table's defaults, generated columns,
//! triggers, constraints and partition routing. That runs in a
//! subtransaction: when a key exists again (a unique or exclusion
//! conflict), it is rolled back and the capture goes the general way
//! instead, which skips those rows.
//!
//! The general way (small captures, changed column types, text-form
//! values, conflicts) decodes each batch into rows of the table's type and
//! runs `INSERT ... SELECT ... FROM unnest($1) ON CONFLICT DO NOTHING`, a
//! thousand rows per statement. Repaired rows are put back by key with
//! `UPDATE ... FROM unnest($1)`.
//!
//! An UPDATE capture is reverted by one `UPDATE ... FROM
//! invariants.capture_entries(...)` statement: a row found by its key gets each
//! changed column's old value back only if it still holds, in every changed
//! column, exactly the image the UPDATE wrote (compared as the type's
//! binary send form, as the log holds it); any other row is a conflict,
//! left as it is and reported by its key.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CString};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgList;

use super::capture_entries::{self, Reverting};
use crate::audit_log::binary::{self, Decoder, Purpose, COPY_HEADER, COPY_TRAILER};
use crate::catalog::{self, first_row, quote_ident, spi, Column, Table};
use crate::errors::InvariantError;
use crate::privilege::{as_table_owner, reading_as_extension_owner, with_canonical_formats};
use crate::xact::{sqlstate_of, try_in_subtransaction};

/// Below this many entries a capture goes the general way: not worth a
/// COPY and its subtransaction.
const COPY_MIN: i64 = 100;

/// A capture to put back, as the log holds it.
pub struct Capture {
    pub id: i64,
    pub op: String,
    /// The names of each image's fields; None for jsonb entries.
    pub columns: Option<Vec<String>>,
    pub types: Vec<Oid>,
    pub formats: String,
    /// UPDATE entries: each field's part (`k`, `o`, `n`).
    pub parts: Option<String>,
    pub entries: i64,
}

impl Capture {
    /// Entries that are changed rows, put back in place by key.
    pub fn changes(&self) -> bool {
        self.op == "REPAIR" || self.op == "UPDATE"
    }
}

/// What putting a capture back did: rows restored, rows skipped, the keys
/// of updated rows left as they are because they changed since, and why
/// the capture could not be put back at all.
#[derive(Default)]
pub struct Outcome {
    pub restored: i64,
    pub skipped: i64,
    pub conflicts: Vec<serde_json::Value>,
    pub problem: Option<String>,
}

impl Outcome {
    fn problem(capture: &Capture, problem: String) -> Outcome {
        Outcome {
            skipped: capture.entries,
            problem: Some(problem),
            ..Outcome::default()
        }
    }
}

/// Each field of the capture's images, with the column of the table it goes
/// into now (None: the column is gone, or generated).
struct Fields {
    targets: Vec<Option<Column>>,
    decoder: Decoder,
    /// 0.1.0's entries (format `j`): each image one jsonb object of the
    /// row, read with jsonb_populate_record; `targets` then lists the
    /// columns the objects hold.
    legacy: bool,
}

impl Fields {
    fn kept(&self) -> Vec<bool> {
        self.targets.iter().map(Option::is_some).collect()
    }

    fn names(&self) -> Vec<String> {
        self.targets.iter().flatten().map(|c| c.name.clone()).collect()
    }
}

pub fn put_back(table: &Table, capture: &Capture) -> Outcome {
    if capture.parts.is_some() {
        return crate::xact::own_update(|| revert_updates(table, capture));
    }
    let fields = match fields(table, capture) {
        Ok(fields) => fields,
        Err(problem) => return Outcome::problem(capture, problem),
    };
    if capture.changes() {
        return crate::xact::own_update(|| update_by_key(table, capture, &fields));
    }
    let same_types = fields
        .targets
        .iter()
        .enumerate()
        .all(|(i, t)| t.as_ref().is_none_or(|c| Some(&c.type_oid) == capture.types.get(i)));
    let binary = !capture.formats.contains('t') && !fields.legacy;
    if capture.entries >= COPY_MIN && same_types && binary {
        match copy_in(table, capture, &fields) {
            Ok(restored) => {
                return Outcome {
                    restored,
                    skipped: capture.entries - restored,
                    ..Outcome::default()
                }
            }
            Err(error) => {
                let code = sqlstate_of(&error);
                let conflict = matches!(
                    code,
                    pgrx::PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION | pgrx::PgSqlErrorCode::ERRCODE_EXCLUSION_VIOLATION
                );
                if !conflict {
                    error.rethrow();
                }
            }
        }
    }
    insert_skipping_conflicts(table, capture, &fields)
}

/// Matches the capture's fields to the table's columns; why not, when a
/// column the table needs is missing or a logged type is gone.
fn fields(table: &Table, capture: &Capture) -> Result<Fields, String> {
    if capture.formats == "j" {
        return legacy_fields(table, capture);
    }
    let Some(names) = &capture.columns else {
        return Err(format!("capture {} holds no row images", capture.id));
    };
    let current = catalog::columns(table.oid);
    let targets: Vec<Option<Column>> = names
        .iter()
        .map(|name| current.iter().find(|c| &c.name == name && !c.generated).cloned())
        .collect();
    for (name, required) in super::restore::column_settings(table.oid) {
        if required && !names.contains(&name) {
            return Err(format!(
                "capture {} does not hold column \"{name}\" (excluded from the audit, or added since), which is NOT NULL without a default",
                capture.id
            ));
        }
    }
    let decoder = Decoder::new(&capture.types, &capture.formats, Purpose::Restore);
    if let Some(gone) = decoder.missing_type() {
        return Err(format!(
            "capture {}: the type of a logged column (OID {}) no longer exists",
            capture.id,
            gone.to_u32()
        ));
    }
    Ok(Fields {
        targets,
        decoder,
        legacy: false,
    })
}

/// The fields of a 0.1.0 capture: the table's columns its first object
/// names (a column added since takes its default).
fn legacy_fields(table: &Table, capture: &Capture) -> Result<Fields, String> {
    let decoder = Decoder::new(&[pg_sys::JSONBOID], "b", Purpose::Restore);
    let first = batches(capture.id)
        .first()
        .map(|first_id| batch_images(capture.id, *first_id))
        .unwrap_or_default();
    let keys: Vec<String> = binary::tuples(&first)
        .next_tuple()
        .and_then(|fields| fields.first().copied().flatten().map(<[u8]>::to_vec))
        .and_then(|bytes| {
            // SAFETY: the field is a jsonb written by jsonb_send; read back
            // with formats pinned.
            let datum = with_canonical_formats(|| unsafe { decoder.decode(0, &bytes) }).ok()?;
            // SAFETY: a jsonb datum just made.
            let object = unsafe { pgrx::JsonB::from_polymorphic_datum(datum, false, pg_sys::JSONBOID) }?;
            Some(object.0.as_object()?.keys().cloned().collect())
        })
        .ok_or_else(|| format!("capture {} holds no row images", capture.id))?;
    let targets = catalog::columns(table.oid)
        .into_iter()
        .filter(|c| !c.generated && keys.contains(&c.name))
        .map(Some)
        .collect();
    Ok(Fields {
        targets,
        decoder,
        legacy: true,
    })
}

/// The first entry id of each batch of the capture, in order.
pub(super) fn batches(capture: i64) -> Vec<i64> {
    reading_as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = spi(client.select(
                "SELECT first_id FROM invariants.audit_rows WHERE capture = $1 ORDER BY first_id",
                None,
                &[capture.into()],
            ));
            rows.filter_map(|row| spi(row.get::<i64>(1))).collect()
        })
    })
}

/// The images of one batch, copied out of the log.
pub(super) fn batch_images(capture: i64, first_id: i64) -> Vec<u8> {
    reading_as_extension_owner(|| {
        let values = first_row(
            "SELECT images FROM invariants.audit_rows WHERE capture = $1 AND first_id = $2",
            &[capture.into(), first_id.into()],
        );
        let Some(datum) = values.first().and_then(|v| v.datum) else {
            return Vec::new();
        };
        // SAFETY: a bytea copied out by first_row; its bytes are copied
        // into the vector and the copy freed.
        unsafe {
            let bytes = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let images = std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(bytes) as *const u8,
                pgrx::varlena::varsize_any_exhdr(bytes),
            )
            .to_vec();
            pg_sys::pfree(datum.cast_mut_ptr());
            images
        }
    })
}

// ------------------------------------------------------------------ COPY

/// What COPY reads: binary COPY's header, the capture's tuples a batch at a
/// time (without the fields of columns gone), its trailer.
struct Feed {
    capture: i64,
    batches: VecDeque<i64>,
    kept: Vec<bool>,
    header_sent: bool,
    done: bool,
    buffer: Vec<u8>,
    at: usize,
}

thread_local! {
    // The feed of the COPY running now (COPY's data callback takes no
    // argument).
    static FEED: RefCell<Option<Feed>> = const { RefCell::new(None) };
}

impl Feed {
    /// Refills the buffer; false at the end.
    fn refill(&mut self) -> bool {
        self.buffer.clear();
        self.at = 0;
        if !self.header_sent {
            self.header_sent = true;
            self.buffer.extend_from_slice(COPY_HEADER);
        } else if let Some(first_id) = self.batches.pop_front() {
            let images = batch_images(self.capture, first_id);
            if self.kept.iter().all(|k| *k) {
                self.buffer = images;
            } else {
                let width = self.kept.iter().filter(|k| **k).count() as i16;
                let mut tuples = binary::tuples(&images);
                while let Some(fields) = tuples.next_tuple() {
                    self.buffer.extend_from_slice(&width.to_be_bytes());
                    for (field, _) in fields.iter().zip(&self.kept).filter(|(_, k)| **k) {
                        match field {
                            Some(bytes) => {
                                self.buffer.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                                self.buffer.extend_from_slice(bytes);
                            }
                            None => self.buffer.extend_from_slice(&(-1i32).to_be_bytes()),
                        }
                    }
                }
            }
        } else if !self.done {
            self.done = true;
            self.buffer.extend_from_slice(COPY_TRAILER);
        } else {
            return false;
        }
        true
    }

    /// Copies at least `min` bytes (fewer only at the end), at most `max`,
    /// to `out`.
    fn read(&mut self, out: &mut [u8], min: usize) -> usize {
        let mut copied = 0;
        while copied < out.len() {
            if self.at >= self.buffer.len() {
                if !self.refill() {
                    break;
                }
                continue;
            }
            let n = (out.len() - copied).min(self.buffer.len() - self.at);
            out[copied..copied + n].copy_from_slice(&self.buffer[self.at..self.at + n]);
            copied += n;
            self.at += n;
            if copied >= min {
                break;
            }
        }
        copied
    }
}

/// COPY's data callback: the next bytes of the feed.
#[pg_guard]
unsafe extern "C-unwind" fn feed_copy(out: *mut c_void, min: c_int, max: c_int) -> c_int {
    // SAFETY: COPY passes a buffer of at least `max` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(out as *mut u8, max.max(0) as usize) };
    FEED.with(|feed| {
        feed.borrow_mut()
            .as_mut()
            .map_or(0, |feed| feed.read(out, min.max(0) as usize) as c_int)
    })
}

/// Clears the feed however the COPY ends.
struct FeedGuard;

impl Drop for FeedGuard {
    fn drop(&mut self) {
        FEED.with(|feed| feed.borrow_mut().take());
    }
}

/// Puts the capture back with COPY FROM, in a subtransaction; the rows
/// copied, or the error that stopped it (rolled back).
fn copy_in(table: &Table, capture: &Capture, fields: &Fields) -> Result<i64, pgrx::pg_sys::panic::CaughtError> {
    let names = fields.names();
    FEED.with(|feed| {
        *feed.borrow_mut() = Some(Feed {
            capture: capture.id,
            batches: batches(capture.id).into(),
            kept: fields.kept(),
            header_sent: false,
            done: false,
            buffer: Vec::new(),
            at: 0,
        })
    });
    let _guard = FeedGuard;
    try_in_subtransaction(|| {
        as_table_owner(table.oid, || {
            // SAFETY: COPY FROM set up as DoCopy does for a relation: opened
            // and locked, one range table entry, the column list and the
            // binary option as parse nodes in the current memory context;
            // the feed is in place before BeginCopyFrom reads the header.
            with_canonical_formats(|| unsafe {
                let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
                let rel = pg_sys::table_open(table.oid, lock);
                let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
                pg_sys::addRangeTableEntryForRelation(pstate, rel, lock, std::ptr::null_mut(), false, false);
                let mut columns = PgList::<pg_sys::Node>::new();
                for name in &names {
                    let name = CString::new(name.as_str()).unwrap_or_default();
                    columns.push(pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast());
                }
                let mut options = PgList::<pg_sys::Node>::new();
                options.push(
                    pg_sys::makeDefElem(
                        pg_sys::pstrdup(c"format".as_ptr()),
                        pg_sys::makeString(pg_sys::pstrdup(c"binary".as_ptr())).cast(),
                        -1,
                    )
                    .cast(),
                );
                let copy = pg_sys::BeginCopyFrom(
                    pstate,
                    rel,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    false,
                    Some(feed_copy),
                    columns.into_pg(),
                    options.into_pg(),
                );
                let copied = pg_sys::CopyFrom(copy);
                pg_sys::EndCopyFrom(copy);
                pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
                copied as i64
            })
        })
    })
}

// --------------------------------------------------------- the general way

/// The rows of one batch as an array of the table's row type (fields
/// decoded, converted to the column's type where it changed, and placed by
/// attribute number); and how many entries the batch holds.
///
/// # Safety
/// Inside a transaction, with `client_encoding` pinned as at capture.
unsafe fn batch_rows(
    table: &Table,
    capture: &Capture,
    fields: &Fields,
    images: &[u8],
) -> Result<(Datum, i64), InvariantError> {
    if fields.legacy {
        // SAFETY: per the contract.
        return unsafe { legacy_rows(fields, images) };
    }
    // SAFETY: per the contract; the row type's descriptor is held while
    // the rows are formed, and every datum is made in the current context.
    unsafe {
        let rowtype = pg_sys::get_rel_type_id(table.oid);
        let desc = pg_sys::lookup_rowtype_tupdesc(rowtype, -1);
        let natts = (*desc).natts as usize;
        let mut rows: Vec<Datum> = Vec::new();
        let mut tuples = binary::tuples(images);
        let mut outcome = Ok(());
        'rows: while let Some(row) = tuples.next_tuple() {
            let mut values = vec![Datum::from(0); natts];
            let mut nulls = vec![true; natts];
            for (i, field) in row.iter().enumerate() {
                let (Some(Some(column)), Some(bytes)) = (fields.targets.get(i), field) else {
                    continue;
                };
                let value = fields
                    .decoder
                    .decode(i, bytes)
                    .and_then(|datum| convert(datum, capture.types.get(i).copied().unwrap_or(column.type_oid), column));
                match value {
                    Ok(datum) => {
                        let at = column.attnum as usize - 1;
                        values[at] = datum;
                        nulls[at] = false;
                    }
                    Err(error) => {
                        outcome = Err(error);
                        break 'rows;
                    }
                }
            }
            let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            rows.push(pg_sys::heap_copy_tuple_as_datum(tuple, desc));
        }
        pg_sys::DecrTupleDescRefCount(desc);
        outcome?;
        let count = rows.len() as i64;
        let array = pg_sys::construct_array(
            rows.as_mut_ptr(),
            rows.len() as i32,
            rowtype,
            -1,
            false,
            pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
        );
        Ok((Datum::from(array), count))
    }
}

/// The jsonb objects of one batch of a 0.1.0 capture, as a jsonb array.
///
/// # Safety
/// As [`batch_rows`].
unsafe fn legacy_rows(fields: &Fields, images: &[u8]) -> Result<(Datum, i64), InvariantError> {
    let mut objects: Vec<Datum> = Vec::new();
    let mut tuples = binary::tuples(images);
    while let Some(row) = tuples.next_tuple() {
        if let Some(Some(bytes)) = row.first() {
            // SAFETY: per the contract.
            objects.push(unsafe { fields.decoder.decode(0, bytes)? });
        }
    }
    let count = objects.len() as i64;
    // SAFETY: an array of jsonb values made in the current context.
    let array = unsafe {
        pg_sys::construct_array(
            objects.as_mut_ptr(),
            objects.len() as i32,
            pg_sys::JSONBOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        )
    };
    Ok((Datum::from(array), count))
}

/// Where a statement reads the batch's rows: `r` the rows, and the
/// expression of their order in the batch.
fn source(table: &Table, fields: &Fields) -> (String, &'static str) {
    if fields.legacy {
        (
            format!(
                "pg_catalog.unnest($1) WITH ORDINALITY AS e(image, ordinality)
                 CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::{}, e.image) AS r",
                table.qualified()
            ),
            "e.ordinality",
        )
    } else {
        ("pg_catalog.unnest($1) WITH ORDINALITY AS r".to_string(), "r.ordinality")
    }
}

/// A value of the logged type `from` as a value of the column's type now:
/// through their text forms when the type changed.
///
/// # Safety
/// `datum` must be a value of type `from`.
unsafe fn convert(datum: Datum, from: Oid, column: &Column) -> Result<Datum, InvariantError> {
    if from == column.type_oid {
        return Ok(datum);
    }
    // SAFETY: per the contract; output and input functions of existing
    // types, under the fixed formats restore runs with.
    unsafe {
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(from, &mut output, &mut varlena);
        let text = pg_sys::OidOutputFunctionCall(output, datum);
        let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(column.type_oid, &mut input, &mut ioparam);
        Ok(pg_sys::OidInputFunctionCall(input, text, ioparam, column.typmod))
    }
}

/// The array type of the table's rows, for the statements' parameter.
fn row_array_type(table: &Table) -> Oid {
    // SAFETY: catalog lookups of the table's row type.
    unsafe { pg_sys::get_array_type(pg_sys::get_rel_type_id(table.oid)) }
}

/// Runs `sql` (its `$1` the batch's rows) for each batch, as the owner;
/// returns the rows it reported done and the entries it was given.
fn each_batch(table: &Table, capture: &Capture, fields: &Fields, sql: &str) -> Result<(i64, i64), InvariantError> {
    let array_type = if fields.legacy {
        pg_sys::JSONBARRAYOID
    } else {
        row_array_type(table)
    };
    let (mut done, mut given) = (0, 0);
    for first_id in batches(capture.id) {
        let images = batch_images(capture.id, first_id);
        let batch_done = as_table_owner(table.oid, || {
            with_canonical_formats(|| {
                // SAFETY: inside a transaction, formats pinned; the array is
                // passed by reference as a value of the row array type.
                let (rows, count) = unsafe { batch_rows(table, capture, fields, &images)? };
                given += count;
                let arg = unsafe { pgrx::datum::DatumWithOid::new(rows, array_type) };
                Ok::<_, InvariantError>(spi(Spi::get_one_with_args::<i64>(sql, &[arg])).unwrap_or(0))
            })
        })?;
        done += batch_done;
    }
    Ok((done, given))
}

/// Inserts the removed rows, skipping those whose keys exist again.
fn insert_skipping_conflicts(table: &Table, capture: &Capture, fields: &Fields) -> Outcome {
    let names = fields.names();
    let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
    let select: Vec<String> = names.iter().map(|n| format!("r.{}", quote_ident(n))).collect();
    let (from, _) = source(table, fields);
    let sql = format!(
        "WITH done AS (
             INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE
             SELECT {select} FROM {from}
             ON CONFLICT DO NOTHING RETURNING 1)
         SELECT pg_catalog.count(*) FROM done",
        t = table.qualified(),
        list = list.join(", "),
        select = select.join(", "),
    );
    finish(capture, each_batch(table, capture, fields, &sql))
}

/// Puts changed rows back by key: the first image of each key in the
/// batch.
fn update_by_key(table: &Table, capture: &Capture, fields: &Fields) -> Outcome {
    let key = catalog::key_columns(table.oid);
    if key.is_empty() {
        return Outcome::problem(
            capture,
            format!(
                "{} has no primary key, so changed rows cannot be found again",
                table.display()
            ),
        );
    }
    let identity = super::restore::identity_columns(table.oid);
    let sets: Vec<String> = fields
        .names()
        .iter()
        .filter(|c| !key.contains(c) && !identity.contains(c))
        .map(|c| format!("{0} = s.{0}", quote_ident(c)))
        .collect();
    if sets.is_empty() {
        return Outcome::problem(capture, format!("capture {} holds no column to put back", capture.id));
    }
    let keys: Vec<String> = key.iter().map(|c| format!("r.{}", quote_ident(c))).collect();
    let matches: Vec<String> = key.iter().map(|c| format!("t.{0} = s.{0}", quote_ident(c))).collect();
    let (from, ordinality) = source(table, fields);
    let sql = format!(
        "WITH s AS (SELECT DISTINCT ON ({keys}) r.* FROM {from}
                     ORDER BY {keys}, {ordinality}),
              done AS (UPDATE {t} AS t SET {sets} FROM s WHERE {matches} RETURNING 1)
         SELECT pg_catalog.count(*) FROM done",
        keys = keys.join(", "),
        t = table.qualified(),
        sets = sets.join(", "),
        matches = matches.join(" AND "),
    );
    finish(capture, each_batch(table, capture, fields, &sql))
}

fn finish(capture: &Capture, result: Result<(i64, i64), InvariantError>) -> Outcome {
    match result {
        Ok((done, given)) => Outcome {
            restored: done,
            skipped: given - done,
            ..Outcome::default()
        },
        Err(error) => Outcome::problem(capture, format!("capture {}: {}", capture.id, error.message)),
    }
}

// ------------------------------------------------------- reverting UPDATEs

/// One field of an UPDATE capture's entries, with the column it is of.
struct RevertField {
    part: char,
    column: Column,
}

/// Reverts an UPDATE capture's rows that still hold what it wrote, with one
/// statement that reads the entries through `capture_entries`.
fn revert_updates(table: &Table, capture: &Capture) -> Outcome {
    let fields = match revert_fields(table, capture) {
        Ok(fields) => fields,
        Err(problem) => return Outcome::problem(capture, problem),
    };
    let reverting = Reverting {
        capture: capture.id,
        types: capture.types.clone(),
        formats: capture.formats.clone(),
        raw: fields.iter().map(|f| f.part == 'n').collect(),
    };
    let sql = revert_sql(table, &fields, &capture.types);
    let result = capture_entries::reverting(&reverting, || {
        as_table_owner(table.oid, || {
            Spi::connect_mut(|client| {
                let rows = client.update(&sql, None, &[capture.id.into(), capture.entries.into()])?;
                rows.first().get_two::<i64, pgrx::JsonB>()
            })
        })
    });
    match result {
        Ok((done, conflicts)) => Outcome {
            restored: done.unwrap_or(0),
            conflicts: match conflicts {
                Some(pgrx::JsonB(serde_json::Value::Array(keys))) => keys,
                _ => Vec::new(),
            },
            ..Outcome::default()
        },
        // pgrx's own errors; Postgres' (a rule the old values break, say)
        // are raised and end the restore.
        Err(error) => Outcome::problem(capture, format!("capture {}: {error}", capture.id)),
    }
}

/// The capture's fields with their columns now; why not, when a column is
/// gone or has another type since.
fn revert_fields(table: &Table, capture: &Capture) -> Result<Vec<RevertField>, String> {
    let (Some(names), Some(parts)) = (&capture.columns, &capture.parts) else {
        return Err(format!("capture {} holds no row images", capture.id));
    };
    let current = catalog::columns(table.oid);
    let mut fields = Vec::with_capacity(names.len());
    for ((name, part), type_oid) in names.iter().zip(parts.chars()).zip(&capture.types) {
        let Some(column) = current.iter().find(|c| &c.name == name) else {
            return Err(format!(
                "capture {}: column \"{name}\" no longer exists, so its UPDATEs cannot be reverted",
                capture.id
            ));
        };
        if column.type_oid != *type_oid {
            return Err(format!(
                "capture {}: column \"{name}\" has another type since, so its UPDATEs are not reverted",
                capture.id
            ));
        }
        fields.push(RevertField {
            part,
            column: column.clone(),
        });
    }
    if let Some(gone) = Decoder::new(&capture.types, &capture.formats, Purpose::Restore).missing_type() {
        return Err(format!(
            "capture {}: the type of a logged column (OID {}) no longer exists",
            capture.id,
            gone.to_u32()
        ));
    }
    Ok(fields)
}

/// The statement that reverts a whole capture (`$1` its id, `$2` its entry
/// count): a changed row found by its key gets its old values back where
/// each changed column still holds the image the UPDATE wrote; returns how
/// many rows, and the keys of the rest.
fn revert_sql(table: &Table, fields: &[RevertField], types: &[Oid]) -> String {
    let mut definitions = Vec::with_capacity(fields.len() + 1);
    let (mut matches, mut sets, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (field, type_oid)) in fields.iter().zip(types).enumerate() {
        let column = quote_ident(&field.column.name);
        let alias = format!("f{i}");
        let type_name = if field.part == 'n' {
            "pg_catalog.bytea".to_string()
        } else {
            type_name(*type_oid)
        };
        definitions.push(format!("{alias} {type_name}"));
        match field.part {
            'k' => {
                matches.push(format!("t.{column} = e.{alias}"));
                keys.push(format!("{}, e.{alias}", catalog::quote_literal(&field.column.name)));
            }
            'o' => sets.push(format!("{column} = e.{alias}")),
            _ => matches.push(format!(
                "{} IS NOT DISTINCT FROM e.{alias}",
                image_of(&format!("t.{column}"), field.column.type_oid)
            )),
        }
    }
    definitions.push("ord pg_catalog.int8".into());
    format!(
        "WITH e AS (SELECT * FROM invariants.capture_entries($1) AS e({definitions}) LIMIT $2),
              done AS (UPDATE {t} AS t SET {sets} FROM e WHERE {matches} RETURNING e.ord)
         SELECT (SELECT pg_catalog.count(*) FROM done),
                (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object({keys}) ORDER BY e.ord) FROM e
                  WHERE NOT EXISTS (SELECT FROM done WHERE done.ord = e.ord))",
        definitions = definitions.join(", "),
        t = table.qualified(),
        sets = sets.join(", "),
        matches = matches.join(" AND "),
        keys = keys.join(", "),
    )
}

/// A type's name for generated SQL: qualified unless `search_path`, pinned
/// to pg_catalog first, finds it.
fn type_name(type_oid: Oid) -> String {
    crate::sql::one::<String>("SELECT pg_catalog.format_type($1, NULL)", &[type_oid.into()]).unwrap_or_default()
}

/// SQL for the image of `expression` (a value of `type_oid`) as the log
/// holds it: the type's binary send form, or its text form's bytes for a
/// type without one.
fn image_of(expression: &str, type_oid: Oid) -> String {
    let send = crate::sql::one::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           FROM pg_catalog.pg_type t
           JOIN pg_catalog.pg_proc p ON p.oid = t.typsend
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE t.oid = $1 AND t.typreceive <> 0",
        &[type_oid.into()],
    );
    match send {
        Some(function) => format!("{function}({expression})"),
        None => format!("pg_catalog.textsend({expression}::pg_catalog.text)"),
    }
}
