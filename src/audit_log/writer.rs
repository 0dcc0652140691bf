//! Writes entries into `invariants.audit_log` the way COPY does: tuples are
//! formed here and handed to the table's multi-insert in batches, and the
//! indexes are updated as each batch lands. Going through `INSERT ... SELECT`
//! instead cost a WAL record, default expressions and a privilege-checked
//! `nextval` per deleted row, several times the DELETE itself.
//!
//! The log's own triggers (UPDATE, DELETE and TRUNCATE only) do not concern
//! inserts, and its constraints hold by construction: every NOT NULL column
//! is filled and `op` is one the CHECK allows. The identity value comes from
//! the column's sequence without a privilege check, as for the column's own
//! default.
use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::catalog::{spi, Table};
use crate::errors::{Code, InvariantError};

/// Rows per multi-insert, as COPY buffers them.
const BATCH: usize = 1000;

const OPS: [&str; 8] = [
    "DELETE",
    "TRUNCATE",
    "PURGE",
    "REPAIR",
    "SOFT_DELETE",
    "DROP",
    "PRUNE",
    "RESTORE",
];

unsafe extern "C" {
    // commands/sequence.h, not in pgrx's bindings: what an identity
    // column's default calls. Called only through pg_guard_ffi_boundary,
    // which catches a Postgres ERROR (a longjmp, not an unwind) at its own
    // frame and re-raises it as a Rust panic.
    fn nextval_internal(relid: Oid, check_permissions: bool) -> i64;
}

/// What every entry of one capture shares: the operation, the table, and
/// who did it from where. Read once, as the caller.
pub struct EntryContext {
    op: &'static str,
    table: Table,
    db_user: String,
    session_user: String,
    application_name: Option<String>,
    client_addr: Option<String>,
    statement: Option<String>,
    /// `pg_trigger_depth()` where the capture started.
    pub trigger_depth: i32,
}

impl EntryContext {
    pub fn current(op: &'static str, table: &Table) -> EntryContext {
        let (db_user, session_user, application_name, client_addr, trigger_depth, statement) = Spi::connect(|client| {
            let row = spi(client.select(
                "SELECT current_user::text, session_user::text,
                        pg_catalog.current_setting('application_name', true),
                        pg_catalog.inet_client_addr()::text, pg_catalog.pg_trigger_depth(),
                        pg_catalog.current_query()",
                Some(1),
                &[],
            ))
            .first();
            (
                spi(row.get::<String>(1)),
                spi(row.get::<String>(2)),
                spi(row.get::<String>(3)),
                spi(row.get::<String>(4)),
                spi(row.get::<i32>(5)),
                spi(row.get::<String>(6)),
            )
        });
        EntryContext {
            op,
            table: table.clone(),
            db_user: db_user.unwrap_or_default(),
            session_user: session_user.unwrap_or_default(),
            application_name,
            client_addr,
            statement: statement.filter(|_| crate::guc::AUDIT_STATEMENT.get()),
            trigger_depth: trigger_depth.unwrap_or(0),
        }
    }
}

/// Entries of one capture on their way into the log. Only `finish` releases
/// what `open` took; a writer is abandoned only when an ERROR is being
/// raised, and the (sub)transaction's abort releases it then.
pub struct LogWriter {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result_rel: *mut pg_sys::ResultRelInfo,
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    used: usize,
    /// Values shared by every entry; the three below change per entry.
    values: Vec<Datum>,
    nulls: Vec<bool>,
    id: usize,
    row_data: usize,
    trigger_depth: usize,
    sequence: Oid,
    written: usize,
}

impl LogWriter {
    pub fn open(entry: &EntryContext) -> Result<LogWriter, InvariantError> {
        if !OPS.contains(&entry.op) {
            return Err(InvariantError::new(
                Code::ERRCODE_INTERNAL_ERROR,
                format!("unknown audit operation {}", entry.op),
            ));
        }
        // SAFETY: plain catalog lookups and executor set-up on a relation
        // this function opens and keeps open until `finish`; every pointer
        // written comes from the allocation just made. Values are formed in
        // the executor state's memory, which lives until `finish`.
        unsafe {
            let namespace = pg_sys::get_namespace_oid(c"invariants".as_ptr(), false);
            let relid = pg_sys::get_relname_relid(c"audit_log".as_ptr(), namespace);
            if relid == pg_sys::InvalidOid {
                return Err(InvariantError::new(
                    Code::ERRCODE_UNDEFINED_TABLE,
                    "invariants.audit_log does not exist",
                ));
            }
            let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let estate = pg_sys::CreateExecutorState();
            let old_context = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            let result_rel =
                pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
            pg_sys::InitResultRelInfo(result_rel, rel, 1, std::ptr::null_mut(), 0);
            pg_sys::ExecOpenIndices(result_rel, false);

            let desc = (*rel).rd_att;
            let natts = (*desc).natts.max(0) as usize;
            let mut writer = LogWriter {
                rel,
                estate,
                result_rel,
                slots: Vec::new(),
                used: 0,
                values: vec![Datum::from(0); natts],
                nulls: vec![true; natts],
                id: usize::MAX,
                row_data: usize::MAX,
                trigger_depth: usize::MAX,
                sequence: pg_sys::InvalidOid,
                written: 0,
            };
            let mut unfilled_required = None;
            for i in 0..natts {
                let attr = &*(*desc).attrs.as_ptr().add(i);
                if attr.attisdropped {
                    continue;
                }
                let name = CStr::from_ptr(attr.attname.data.as_ptr()).to_string_lossy();
                let value = match name.as_ref() {
                    "id" => {
                        writer.id = i;
                        writer.sequence = pg_sys::getIdentitySequence(relid, attr.attnum, false);
                        Some(Datum::from(0))
                    }
                    "row_data" => {
                        writer.row_data = i;
                        None
                    }
                    "trigger_depth" => {
                        writer.trigger_depth = i;
                        Some(Datum::from(entry.trigger_depth))
                    }
                    "at" => Some(Datum::from(pg_sys::GetCurrentTransactionStartTimestamp())),
                    "txid" => Some(Datum::from(pg_sys::GetTopFullTransactionId().value)),
                    "op" => Some(text_datum(entry.op)),
                    "tbl" => Some(Datum::from(entry.table.oid)),
                    "schema_name" => Some(text_datum(&entry.table.schema)),
                    "table_name" => Some(text_datum(&entry.table.name)),
                    "db_user" => Some(text_datum(&entry.db_user)),
                    "session_user" => Some(text_datum(&entry.session_user)),
                    "application_name" => entry.application_name.as_deref().map(text_datum),
                    "client_addr" => entry.client_addr.as_deref().map(|a| typed_datum(a, attr.atttypid)),
                    "statement" => entry.statement.as_deref().map(text_datum),
                    _ => None,
                };
                if value.is_none() && attr.attnotnull && i != writer.row_data {
                    unfilled_required = Some(name.into_owned());
                }
                if let Some(value) = value {
                    writer.values[i] = value;
                    writer.nulls[i] = false;
                }
            }
            pg_sys::MemoryContextSwitchTo(old_context);
            if writer.id == usize::MAX || writer.row_data == usize::MAX || writer.trigger_depth == usize::MAX {
                unfilled_required = Some("id, row_data or trigger_depth".into());
            }
            if let Some(column) = unfilled_required {
                writer.finish();
                return Err(InvariantError::new(
                    Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("invariants.audit_log has been altered: cannot fill column {column}"),
                )
                .hint("Reinstall the extension's audit log, or restore its original definition."));
            }
            Ok(writer)
        }
    }

    /// Adds one entry: a row image (jsonb, None for SQL NULL) removed at
    /// trigger depth `depth`. The image is copied; it need not outlive the
    /// call.
    pub fn append(&mut self, image: Option<Datum>, depth: i32) {
        // SAFETY: the slot belongs to this writer's relation and executor
        // state; values and nulls have one entry per attribute of its
        // descriptor, and materializing copies every by-reference value
        // into the slot's own memory before the caller's can go.
        unsafe {
            if self.used == self.slots.len() {
                // In the executor state's memory: freed with it.
                let old_context = pg_sys::MemoryContextSwitchTo((*self.estate).es_query_cxt);
                let slot = pg_sys::table_slot_create(self.rel, &mut (*self.estate).es_tupleTable);
                pg_sys::MemoryContextSwitchTo(old_context);
                self.slots.push(slot);
            }
            let slot = self.slots[self.used];
            pg_sys::ExecClearTuple(slot);
            let natts = self.values.len();
            std::ptr::copy_nonoverlapping(self.values.as_ptr(), (*slot).tts_values, natts);
            std::ptr::copy_nonoverlapping(self.nulls.as_ptr(), (*slot).tts_isnull, natts);
            let id = pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(self.sequence, false));
            *(*slot).tts_values.add(self.id) = Datum::from(id);
            *(*slot).tts_values.add(self.trigger_depth) = Datum::from(depth);
            *(*slot).tts_values.add(self.row_data) = image.unwrap_or(Datum::from(0));
            *(*slot).tts_isnull.add(self.row_data) = image.is_none();
            pg_sys::ExecStoreVirtualTuple(slot);
            pg_sys::ExecMaterializeSlot(slot);
        }
        self.used += 1;
        if self.used == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.used == 0 {
            return;
        }
        // SAFETY: the first `used` slots hold materialized entries of this
        // relation; the executor state and result relation were set up for
        // it in `open`, its indexes opened there. What the multi-insert and
        // the index inserts allocate (the multi-insert keeps its TOASTed
        // copies, as COPY notes) goes to the per-tuple memory, reset after.
        unsafe {
            let per_batch = (*pg_sys::MakePerTupleExprContext(self.estate)).ecxt_per_tuple_memory;
            let old_context = pg_sys::MemoryContextSwitchTo(per_batch);
            // Taken now, after the capture query's own command counter
            // increment: entries are never visible to the query that reads
            // the rows.
            (*self.estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::table_multi_insert(
                self.rel,
                self.slots.as_mut_ptr(),
                self.used as i32,
                (*self.estate).es_output_cid,
                0,
                // No bulk-insert ring: it would write each filled page out
                // at once, where shared buffers can absorb a large capture.
                std::ptr::null_mut(),
            );
            if (*self.result_rel).ri_NumIndices > 0 {
                for &slot in &self.slots[..self.used] {
                    pg_sys::ExecInsertIndexTuples(
                        self.result_rel,
                        slot,
                        self.estate,
                        false,
                        false,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    );
                }
            }
            pg_sys::MemoryContextSwitchTo(old_context);
            pg_sys::MemoryContextReset(per_batch);
        }
        self.written += self.used;
        self.used = 0;
    }

    /// Writes what is left and releases everything; returns how many
    /// entries were written. The relation stays locked until the
    /// transaction ends.
    pub fn finish(mut self) -> usize {
        self.flush();
        // SAFETY: releases what `open` acquired, once: the writer is
        // consumed. Later commands of the transaction see the entries.
        unsafe {
            pg_sys::ExecCloseIndices(self.result_rel);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::CommandCounterIncrement();
        }
        self.written
    }
}

/// A text datum in the current memory context.
fn text_datum(value: &str) -> Datum {
    typed_datum(value, pg_sys::TEXTOID)
}

/// `value` converted by `type_oid`'s input function, in the current memory
/// context. Interior NULs cannot be passed to an input function and are
/// dropped.
fn typed_datum(value: &str, type_oid: Oid) -> Datum {
    let text = CString::new(value.replace('\0', "")).unwrap_or_default();
    let mut input = pg_sys::InvalidOid;
    let mut ioparam = pg_sys::InvalidOid;
    // SAFETY: looks up an existing type's input function and calls it on a
    // NUL-terminated copy of the value.
    unsafe {
        pg_sys::getTypeInputInfo(type_oid, &mut input, &mut ioparam);
        pg_sys::OidInputFunctionCall(input, text.as_ptr() as *mut _, ioparam, -1)
    }
}
