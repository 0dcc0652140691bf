//! Writes captures into the audit log: one `audit_capture` row (who, when,
//! how), then the entries a thousand to an `audit_rows` row. The statements
//! name only the extension's own tables and run as its owner; there is one
//! per capture and one per batch, whatever the number of rows.
use pgrx::prelude::*;
use pgrx::JsonB;

use super::binary::Layout;
use crate::catalog::{spi, Table};
use crate::privilege::as_extension_owner;

/// Entries per `audit_rows` row (the entry id sequence steps by as many).
pub const BATCH: usize = 1000;

/// What every entry of one capture shares: the operation, the table, and
/// who did it from where. Read once, as the caller, before anything runs
/// as someone else.
pub struct EntryContext {
    pub op: &'static str,
    pub table: Table,
    db_user: String,
    session_user: String,
    application_name: Option<String>,
    client_addr: Option<String>,
    statement: Option<String>,
    context: Option<JsonB>,
    /// `pg_trigger_depth()` where the capture started.
    pub trigger_depth: i32,
}

impl Clone for EntryContext {
    fn clone(&self) -> EntryContext {
        EntryContext {
            op: self.op,
            table: self.table.clone(),
            db_user: self.db_user.clone(),
            session_user: self.session_user.clone(),
            application_name: self.application_name.clone(),
            client_addr: self.client_addr.clone(),
            statement: self.statement.clone(),
            context: self.context.as_ref().map(|c| JsonB(c.0.clone())),
            trigger_depth: self.trigger_depth,
        }
    }
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
            context: crate::guc::audit_context(),
            trigger_depth: trigger_depth.unwrap_or(0),
        }
    }
}

/// The entries of one capture on their way into the log. The capture row
/// is written with the first batch: a statement that removed nothing leaves
/// nothing.
pub struct CaptureWriter {
    entry: EntryContext,
    layout: Layout,
    capture: Option<i64>,
    /// The batch's tuples, in binary COPY format.
    batch: Vec<u8>,
    in_batch: usize,
    cascaded: Vec<i32>,
    written: usize,
    /// Memory for what encoding a batch allocates, reset after each batch.
    memory: pgrx::PgMemoryContexts,
}

impl CaptureWriter {
    /// A writer of entries laid out as `layout` says.
    pub fn new(entry: EntryContext, layout: Layout) -> CaptureWriter {
        CaptureWriter {
            entry,
            layout,
            capture: None,
            batch: Vec::new(),
            in_batch: 0,
            cascaded: Vec::new(),
            written: 0,
            memory: pgrx::PgMemoryContexts::new("pg_invariants capture batch"),
        }
    }

    /// The capture's id, writing its row now if it was not written yet.
    pub fn capture_id(&mut self) -> i64 {
        if let Some(id) = self.capture {
            return id;
        }
        let e = &self.entry;
        let layout = &self.layout;
        let id = as_extension_owner(|| {
            spi(Spi::get_one_with_args::<i64>(
                "INSERT INTO invariants.audit_capture
                     (id, at, txid, op, tbl, schema_name, table_name, columns, types, formats, parts, db_user,
                      \"session_user\", application_name, client_addr, trigger_depth, statement, context)
                 VALUES (pg_catalog.nextval('invariants.audit_capture_id_seq'), pg_catalog.now(),
                         pg_catalog.pg_current_xact_id(), $1, $2::pg_catalog.oid::pg_catalog.regclass, $3, $4, $5,
                         $6, $7, $8, $9, $10, $11, $12::pg_catalog.inet, $13, $14, $15)
                 RETURNING id",
                &[
                    e.op.into(),
                    e.table.oid.into(),
                    e.table.schema.as_str().into(),
                    e.table.name.as_str().into(),
                    layout.columns.clone().into(),
                    layout.types.clone().into(),
                    layout.formats.as_str().into(),
                    layout.parts.clone().into(),
                    e.db_user.as_str().into(),
                    e.session_user.as_str().into(),
                    e.application_name.clone().into(),
                    e.client_addr.clone().into(),
                    e.trigger_depth.into(),
                    e.statement.clone().into(),
                    e.context.as_ref().map(|c| JsonB(c.0.clone())).into(),
                ],
            ))
        })
        .unwrap_or(0);
        self.capture = Some(id);
        id
    }

    /// Adds one entry, written by `encode` (whatever it allocates goes to
    /// the batch's memory); `cascaded` puts it one level deeper.
    pub fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>), cascaded: bool) {
        let position = self.in_batch;
        let batch = &mut self.batch;
        // SAFETY: switches to the batch's memory for the encoding only.
        unsafe { self.memory.switch_to(|_| encode(batch)) };
        if cascaded {
            self.cascaded.push(position as i32);
        }
        self.in_batch += 1;
        if self.in_batch == BATCH {
            self.flush();
        }
    }

    /// Adds one entry whose bytes `write` copies in, already made (it
    /// allocates nothing in Postgres' memory).
    pub fn append_made(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.batch);
        self.in_batch += 1;
        if self.in_batch == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.in_batch == 0 {
            return;
        }
        let capture = self.capture_id();
        let images = std::mem::take(&mut self.batch);
        let cascaded = (!self.cascaded.is_empty()).then(|| std::mem::take(&mut self.cascaded));
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "INSERT INTO invariants.audit_rows (capture, first_id, entries, images, cascaded)
                 VALUES ($1, pg_catalog.nextval('invariants.audit_entry_id_seq'), $2, $3, $4)",
                &[
                    capture.into(),
                    (self.in_batch as i32).into(),
                    images.as_slice().into(),
                    cascaded.into(),
                ],
            ))
        });
        // SAFETY: nothing made in the batch's memory is used any more.
        unsafe { self.memory.reset() };
        self.written += self.in_batch;
        self.in_batch = 0;
        self.batch = images;
        self.batch.clear();
    }

    /// Writes what is left; returns how many entries were written.
    pub fn finish(mut self) -> usize {
        self.flush();
        self.written
    }
}
