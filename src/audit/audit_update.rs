//! `invariants.audit_update()`: AFTER UPDATE ... REFERENCING OLD TABLE AND
//! NEW TABLE FOR EACH STATEMENT, on tables audited with `updates => true`.
//!
//! Postgres adds each updated row's old and new versions to the two
//! transition tables together, so the n-th old row and the n-th new row are
//! the same row. Both are read here straight from their tuplestores (no
//! query, no code of the table's owner). A row writes one `UPDATE` entry:
//! its key (as it is now), then the old and the new value of each column
//! that changed, never the whole row. A column changed when its image (its
//! type's binary send form, as every capture writes it) differs; a row
//! where nothing changed, or only excluded or generated columns did, writes
//! nothing. Entries with the same changed columns share a capture, so that
//! each capture's images have fixed fields; one statement usually makes one.
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};

use super::settings;
use crate::audit_log::binary::{Layout, ValueEncoder};
use crate::audit_log::{CaptureWriter, EntryContext};
use crate::catalog::{columns, key_columns, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::{pinned, with_canonical_formats};

pub const TRIGGER_NAME: &str = pg_invariants_core::triggers::AUDIT_UPDATE.name;

crate::c_function!(audit_update, pg_finfo_audit_update, audit_update_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_update() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_update';
"#,
    name = "audit_update",
    requires = ["schema"]
);

fn audit_update_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let event = trigger.tg_event;
    let stores = (trigger.tg_oldtable, trigger.tg_newtable);
    if event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_UPDATE
        || event & pg_sys::TRIGGER_EVENT_ROW != 0
        || stores.0.is_null()
        || stores.1.is_null()
    {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.audit_update() must run AFTER UPDATE ... REFERENCING OLD TABLE ... NEW TABLE ... FOR EACH STATEMENT",
        ));
    }
    if crate::xact::in_own_update() {
        return Ok(Datum::from(0));
    }
    // SAFETY: the trigger manager passes an open relation.
    let (relid, desc) = unsafe { ((*trigger.tg_relation).rd_id, (*trigger.tg_relation).rd_att) };
    pinned(|| {
        let Some(table) = Table::lookup(relid) else {
            return Ok(());
        };
        let Some(settings) = settings(relid).filter(|s| s.updates) else {
            return Ok(());
        };
        let plan = Plan::new(&table, &settings.exclude)?;
        // SAFETY: the transition tables of the running trigger, whose rows
        // have the relation's descriptor.
        with_canonical_formats(|| unsafe { plan.capture(&table, desc, stores.0, stores.1) })
    })?;
    Ok(Datum::from(0))
}

/// One column as the capture reads it.
struct Tracked {
    name: String,
    /// Its position in the rows (attribute number - 1).
    index: usize,
    typlen: i16,
    typbyval: bool,
    value: ValueEncoder,
}

impl Tracked {
    fn new(column: &crate::catalog::Column) -> Tracked {
        let (mut typlen, mut typbyval) = (0i16, false);
        // SAFETY: a catalog lookup of an existing type, into locals.
        unsafe { pg_sys::get_typlenbyval(column.type_oid, &mut typlen, &mut typbyval) };
        Tracked {
            name: column.name.clone(),
            index: column.attnum as usize - 1,
            typlen,
            typbyval,
            value: ValueEncoder::new(column.type_oid),
        }
    }

    /// True when the two values are the same bytes in memory (then their
    /// images are equal without being written).
    ///
    /// # Safety
    /// Both are values of the column's type.
    unsafe fn same_datum(&self, a: Datum, b: Datum) -> bool {
        // SAFETY: per the contract: by-value values are compared as
        // datums, fixed-length ones over their length, varlenas over the
        // size their header gives, C strings up to their NUL.
        unsafe {
            if self.typbyval {
                a == b
            } else if a.cast_mut_ptr::<u8>() == b.cast_mut_ptr::<u8>() {
                true
            } else if self.typlen > 0 {
                bytes(a, self.typlen as usize) == bytes(b, self.typlen as usize)
            } else if self.typlen == -1 {
                let (la, lb) = (
                    pgrx::varlena::varsize_any(a.cast_mut_ptr()),
                    pgrx::varlena::varsize_any(b.cast_mut_ptr()),
                );
                la == lb && bytes(a, la) == bytes(b, lb)
            } else {
                CStr::from_ptr(a.cast_mut_ptr()) == CStr::from_ptr(b.cast_mut_ptr())
            }
        }
    }
}

/// # Safety
/// `datum` points to at least `len` readable bytes.
unsafe fn bytes<'a>(datum: Datum, len: usize) -> &'a [u8] {
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), len) }
}

/// What the capture of one table's UPDATEs reads and writes.
struct Plan {
    key: Vec<Tracked>,
    /// The columns whose changes are written: not generated, not excluded.
    tracked: Vec<Tracked>,
}

impl Plan {
    fn new(table: &Table, exclude: &[String]) -> Result<Plan, InvariantError> {
        let all = columns(table.oid);
        let key_names = key_columns(table.oid);
        if key_names.is_empty() {
            return Err(InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "UPDATE of {} refused: its UPDATEs are audited, and it has no primary key to find the rows again",
                    table.display()
                ),
            )
            .detail("Nothing was changed.")
            .hint(format!(
                "Add a primary key, or stop auditing UPDATEs: SELECT invariants.enable_audit('{}', updates => false);",
                table.display()
            ))
            .table(&table.schema, &table.name));
        }
        let key = key_names
            .iter()
            .filter_map(|name| all.iter().find(|c| &c.name == name))
            .map(Tracked::new)
            .collect();
        let tracked = all
            .iter()
            .filter(|c| !c.generated && !exclude.contains(&c.name))
            .map(Tracked::new)
            .collect();
        Ok(Plan { key, tracked })
    }

    /// The layout of the entries that changed the columns `changed`
    /// (positions in `tracked`).
    fn layout(&self, changed: &[u16]) -> Layout {
        let changed: Vec<&Tracked> = changed.iter().map(|&i| &self.tracked[i as usize]).collect();
        let fields: Vec<&Tracked> = self
            .key
            .iter()
            .chain(changed.iter().copied())
            .chain(changed.iter().copied())
            .collect();
        let parts = "k".repeat(self.key.len()) + &"o".repeat(changed.len()) + &"n".repeat(changed.len());
        Layout {
            columns: Some(fields.iter().map(|t| t.name.clone()).collect()),
            types: fields.iter().map(|t| t.value.type_oid()).collect(),
            formats: fields.iter().map(|t| t.value.format()).collect(),
            parts: Some(parts),
        }
    }

    /// Reads the statement's old and new rows in step and writes an entry
    /// for each row that changed.
    ///
    /// # Safety
    /// `old` and `new` are the running trigger's transition tables, of
    /// rows described by `desc`; run with formats pinned.
    unsafe fn capture(
        &self,
        table: &Table,
        desc: pg_sys::TupleDesc,
        old: *mut pg_sys::Tuplestorestate,
        new: *mut pg_sys::Tuplestorestate,
    ) -> Result<(), InvariantError> {
        // SAFETY: per the contract. Each tuplestore is read through a read
        // pointer of its own, rewound first (others reading it select
        // theirs); each row is deformed in its slot, which is dropped at
        // the end; what encoding allocates goes to a context reset every
        // thousand rows.
        unsafe {
            let rows = pg_sys::tuplestore_tuple_count(old);
            if rows != pg_sys::tuplestore_tuple_count(new) {
                // untestable: Postgres adds an updated row's two versions together
                return Err(InvariantError::new(
                    Code::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!(
                        "UPDATE of {} refused: its old and new rows do not pair up, so it cannot be audited",
                        table.display()
                    ),
                ));
            }
            if rows == 0 {
                return Ok(());
            }
            let entry = EntryContext::current("UPDATE", table);
            let natts = (*desc).natts;
            let old_slot = Reader::open(old, desc);
            let new_slot = Reader::open(new, desc);
            // What encoding allocates (send functions) goes to a context of
            // its own, current for the whole loop and reset every thousand
            // rows.
            let outer_context = pg_sys::CurrentMemoryContext;
            let scratch = pgrx::PgMemoryContexts::new("pg_invariants update capture");
            let scratch_context = scratch.value();
            // Declared after `scratch`, so dropped before it: the previous
            // context is current again before the scratch one is deleted,
            // on every way out.
            let _current = CurrentContext::switch_to(scratch_context);
            // One writer per set of changed columns; usually one in all.
            let mut writers: Vec<(Vec<u16>, CaptureWriter)> = Vec::new();
            let mut last = 0usize;
            let mut changed: Vec<u16> = Vec::with_capacity(self.tracked.len());
            let (mut old_image, mut new_image) = (Vec::<u8>::new(), Vec::<u8>::new());
            // Per changed column, where its old and new fields are in the
            // two buffers.
            let mut old_spans: Vec<(usize, usize)> = Vec::with_capacity(self.tracked.len());
            let mut new_spans: Vec<(usize, usize)> = Vec::with_capacity(self.tracked.len());
            let mut key_image = Vec::<u8>::new();
            let mut row = 0u64;
            while old_slot.next() && new_slot.next() {
                row += 1;
                if row.is_multiple_of(1000) {
                    pg_sys::MemoryContextReset(scratch_context);
                }
                pg_sys::slot_getsomeattrs_int(old_slot.slot, natts);
                pg_sys::slot_getsomeattrs_int(new_slot.slot, natts);
                let (ov, on) = old_slot.values(natts);
                let (nv, nn) = new_slot.values(natts);
                changed.clear();
                old_image.clear();
                new_image.clear();
                old_spans.clear();
                new_spans.clear();
                for (i, column) in self.tracked.iter().enumerate() {
                    let at = column.index;
                    let (o, n) = ((!on[at]).then_some(ov[at]), (!nn[at]).then_some(nv[at]));
                    let maybe_changed = match (o, n) {
                        (None, None) => false,
                        (Some(a), Some(b)) => !column.same_datum(a, b),
                        _ => true,
                    };
                    if !maybe_changed {
                        continue;
                    }
                    let (o_start, n_start) = (old_image.len(), new_image.len());
                    column.value.append(o, &mut old_image);
                    column.value.append(n, &mut new_image);
                    if old_image[o_start..] == new_image[n_start..] {
                        old_image.truncate(o_start);
                        new_image.truncate(n_start);
                        continue;
                    }
                    changed.push(i as u16);
                    old_spans.push((o_start, old_image.len()));
                    new_spans.push((n_start, new_image.len()));
                }
                if changed.is_empty() {
                    continue;
                }
                key_image.clear();
                for column in &self.key {
                    let at = column.index;
                    column.value.append((!nn[at]).then_some(nv[at]), &mut key_image);
                }
                if writers.get(last).is_none_or(|(set, _)| *set != changed) {
                    last = match writers.iter().position(|(set, _)| *set == changed) {
                        Some(found) => found,
                        None => {
                            // Made outside the scratch context: a reset of
                            // it would delete the writer's (a child).
                            let _outer = CurrentContext::switch_to(outer_context);
                            writers.push((
                                changed.clone(),
                                CaptureWriter::new(entry.clone(), self.layout(&changed)),
                            ));
                            writers.len() - 1
                        }
                    };
                }
                let Some((_, writer)) = writers.get_mut(last) else {
                    continue;
                };
                let fields = (self.key.len() + 2 * changed.len()) as i16;
                writer.append_made(|out| {
                    out.extend_from_slice(&fields.to_be_bytes());
                    out.extend_from_slice(&key_image);
                    for &(start, end) in &old_spans {
                        out.extend_from_slice(&old_image[start..end]);
                    }
                    for &(start, end) in &new_spans {
                        out.extend_from_slice(&new_image[start..end]);
                    }
                });
            }
            old_slot.close();
            new_slot.close();
            // Each row is in one capture: their order does not matter, but
            // is kept the same from run to run.
            writers.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, writer) in writers {
                writer.finish();
            }
            Ok(())
        }
    }
}

/// A transition table read from its start through a read pointer of its
/// own, into a slot.
struct Reader {
    store: *mut pg_sys::Tuplestorestate,
    pointer: i32,
    slot: *mut pg_sys::TupleTableSlot,
    /// Where a row read back from a tuplestore spilled to disk is made (the
    /// slot frees it when the next comes): the context current at open,
    /// not the capture's scratch one, which is reset under it.
    context: pg_sys::MemoryContext,
}

impl Reader {
    /// # Safety
    /// `store` is a live transition table of rows described by `desc`.
    unsafe fn open(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Reader {
        // SAFETY: per the contract; transition tables allow rewinding.
        unsafe {
            let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
            pg_sys::tuplestore_select_read_pointer(store, pointer);
            pg_sys::tuplestore_rescan(store);
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
            Reader {
                store,
                pointer,
                slot,
                context: pg_sys::CurrentMemoryContext,
            }
        }
    }

    /// Moves to the next row; false at the end.
    ///
    /// # Safety
    /// The reader is open.
    unsafe fn next(&self) -> bool {
        // SAFETY: per the contract; the slot keeps the tuplestore's tuple
        // until the next call; the context is the reader's, alive while it
        // is.
        unsafe {
            let _current = CurrentContext::switch_to(self.context);
            pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
            pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot)
        }
    }

    /// The current row's values and nulls, deformed up to `natts`.
    ///
    /// # Safety
    /// The slot holds a row deformed up to `natts`.
    unsafe fn values<'a>(&self, natts: i32) -> (&'a [Datum], &'a [bool]) {
        // SAFETY: per the contract.
        unsafe {
            (
                std::slice::from_raw_parts((*self.slot).tts_values, natts as usize),
                std::slice::from_raw_parts((*self.slot).tts_isnull, natts as usize),
            )
        }
    }

    /// # Safety
    /// The reader is open; not used after.
    unsafe fn close(self) {
        // SAFETY: per the contract; read pointer 0 is the one Postgres'
        // own readers expect to find selected.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::tuplestore_select_read_pointer(self.store, 0);
        }
    }
}

/// Makes a memory context current until dropped.
struct CurrentContext(pg_sys::MemoryContext);

impl CurrentContext {
    /// # Safety
    /// `context` outlives the returned value.
    unsafe fn switch_to(context: pg_sys::MemoryContext) -> CurrentContext {
        // SAFETY: per the contract.
        unsafe {
            let previous = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = context;
            CurrentContext(previous)
        }
    }
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        // SAFETY: the context current before, still alive.
        unsafe { pg_sys::CurrentMemoryContext = self.0 };
    }
}
