//! Writes captures into the audit log: one `audit_capture` row (who, when,
//! how), then the entries a thousand to an `audit_rows` row. The statements
//! name only the extension's own tables and run as its owner; there is one
//! per capture and one per batch, whatever the number of rows.
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::{IntoDatum, JsonB};

use super::row_image::ExactValue;
use crate::catalog::{spi, Table};
use crate::errors::InvariantError;
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
    /// The names of each image's values; None for jsonb objects.
    columns: Option<Vec<String>>,
    capture: Option<i64>,
    /// Memory for the batch's values, reset after each batch.
    memory: pgrx::PgMemoryContexts,
    state: *mut pg_sys::JsonbParseState,
    in_batch: usize,
    exact: Vec<(usize, ExactValue)>,
    cascaded: Vec<i32>,
    written: usize,
}

impl CaptureWriter {
    pub fn new(entry: EntryContext, columns: Option<Vec<String>>) -> CaptureWriter {
        CaptureWriter {
            entry,
            columns,
            capture: None,
            memory: pgrx::PgMemoryContexts::new("pg_invariants capture batch"),
            state: std::ptr::null_mut(),
            in_batch: 0,
            exact: Vec::new(),
            cascaded: Vec::new(),
            written: 0,
        }
    }

    /// The capture's id, writing its row now if it was not written yet.
    pub fn capture_id(&mut self) -> i64 {
        if let Some(id) = self.capture {
            return id;
        }
        let e = &self.entry;
        let id = as_extension_owner(|| {
            spi(Spi::get_one_with_args::<i64>(
                "INSERT INTO invariants.audit_capture
                     (id, at, txid, op, tbl, schema_name, table_name, columns, db_user, \"session_user\",
                      application_name, client_addr, trigger_depth, statement, context)
                 VALUES (pg_catalog.nextval('invariants.audit_capture_id_seq'), pg_catalog.now(),
                         pg_catalog.pg_current_xact_id(), $1, $2::pg_catalog.oid::pg_catalog.regclass, $3, $4, $5,
                         $6, $7, $8, $9::pg_catalog.inet, $10, $11, $12)
                 RETURNING id",
                &[
                    e.op.into(),
                    e.table.oid.into(),
                    e.table.schema.as_str().into(),
                    e.table.name.as_str().into(),
                    self.columns.clone().into(),
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

    /// Adds one entry, pushed onto the batch by `push` (in the batch's
    /// memory); `exact` holds its values jsonb cannot carry; `cascaded`
    /// puts it one level deeper.
    pub fn append(
        &mut self,
        push: impl FnOnce(&mut *mut pg_sys::JsonbParseState, &mut Vec<ExactValue>) -> Result<(), InvariantError>,
        cascaded: bool,
    ) -> Result<(), InvariantError> {
        let position = self.in_batch;
        let mut exact = Vec::new();
        let state = &mut self.state;
        // SAFETY: the batch's values are made in its own memory, which
        // lives until the batch is written (and reset then).
        unsafe {
            self.memory.switch_to(|_| {
                if state.is_null() {
                    pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY, std::ptr::null_mut());
                }
                push(state, &mut exact)
            })
        }?;
        self.exact.extend(exact.into_iter().map(|e| (position, e)));
        if cascaded {
            self.cascaded.push(position as i32);
        }
        self.in_batch += 1;
        if self.in_batch == BATCH {
            self.flush();
        }
        Ok(())
    }

    /// Adds one entry that is a whole jsonb value (an event, or an image
    /// read as jsonb).
    pub fn append_jsonb(&mut self, value: &JsonB) -> Result<(), InvariantError> {
        self.append(
            |state, _| {
                // Made in the batch's memory, which outlives its serialization.
                if let Some(datum) = JsonB(value.0.clone()).into_datum() {
                    // SAFETY: a jsonb datum, alive until the batch is
                    // serialized; pushed whole as a container.
                    unsafe {
                        let mut binary = super::row_image::binary_value(datum);
                        pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_ELEM, &mut binary);
                    }
                }
                Ok(())
            },
            false,
        )
    }

    fn flush(&mut self) {
        if self.in_batch == 0 {
            return;
        }
        let capture = self.capture_id();
        let state = &mut self.state;
        // SAFETY: closes the batch's array and serializes it, in the batch's
        // memory; the datum is used before the memory is reset below.
        let images: Datum = unsafe {
            self.memory.switch_to(|_| {
                let array =
                    pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_END_ARRAY, std::ptr::null_mut());
                Datum::from(pg_sys::JsonbValueToJsonb(array))
            })
        };
        let exact = (!self.exact.is_empty()).then(|| {
            let mut object = serde_json::Map::new();
            for (position, (column, text)) in self.exact.drain(..) {
                let name = match &self.columns {
                    Some(columns) => columns.get(column).cloned().unwrap_or_default(),
                    None => column.to_string(),
                };
                object
                    .entry(position.to_string())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
                    .as_object_mut()
                    .map(|o| o.insert(name, serde_json::Value::String(text)));
            }
            JsonB(serde_json::Value::Object(object))
        });
        let cascaded = (!self.cascaded.is_empty()).then(|| std::mem::take(&mut self.cascaded));
        // SAFETY: a jsonb value built above, passed by reference.
        let images_arg = unsafe { pgrx::datum::DatumWithOid::new(images, pg_sys::JSONBOID) };
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "INSERT INTO invariants.audit_rows (capture, first_id, images, exact, cascaded)
                 VALUES ($1, pg_catalog.nextval('invariants.audit_entry_id_seq'), $2, $3, $4)",
                &[capture.into(), images_arg, exact.into(), cascaded.into()],
            ))
        });
        self.state = std::ptr::null_mut();
        // SAFETY: nothing made in the batch's memory is used any more.
        unsafe { self.memory.reset() };
        self.written += self.in_batch;
        self.in_batch = 0;
        self.exact.clear();
    }

    /// Writes what is left; returns how many entries were written.
    pub fn finish(mut self) -> usize {
        self.flush();
        self.written
    }
}
