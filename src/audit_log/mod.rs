//! The audit log. `invariants.audit_log` is a view, one row per entry, over
//! `invariants.audit_capture` (one row per capture: a statement's rows or
//! an event, with who did it) and `invariants.audit_rows` (the entries, a
//! thousand to a row). All three are append-only: UPDATE, DELETE and
//! TRUNCATE fail for every role, superusers included; only
//! `invariants.prune_audit` removes entries, and it records that it did.
pub mod binary;
mod row_image;
mod writer;

use std::cell::Cell;
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, JsonB};

use row_image::JsonImage;
pub use writer::{CaptureWriter, EntryContext, BATCH};

use crate::catalog::{spi, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, as_table_owner, pinned};

thread_local! {
    // Set only while prune_audit deletes; nothing a user runs can set it.
    static PRUNING: Cell<bool> = const { Cell::new(false) };
}

crate::c_function!(audit_log_append_only, pg_finfo_audit_log_append_only, refuse_changes);

fn append_only_error(verb: &str) -> InvariantError {
    InvariantError::new(
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("invariants.audit_log is append-only: {verb} is not allowed"),
    )
    .detail("The audit log keeps the only copy of removed rows; no role may change or remove its entries.")
    .hint("To remove old entries call invariants.prune_audit(older_than interval), which records the pruning.")
    .table("invariants", "audit_log")
}

fn refuse_changes(fcinfo: pg_sys::FunctionCallInfo) -> Result<pg_sys::Datum, InvariantError> {
    // SAFETY: Postgres calls this function only as a trigger.
    let trigger = unsafe { crate::errors::trigger_data(fcinfo)? };
    let event = trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    if event == pg_sys::TRIGGER_EVENT_DELETE && PRUNING.with(Cell::get) {
        return Ok(pg_sys::Datum::from(0));
    }
    let verb = match event {
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
        pg_sys::TRIGGER_EVENT_TRUNCATE => "TRUNCATE",
        _ => "this change",
    };
    Err(append_only_error(verb))
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_log_append_only() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_append_only';
CREATE TRIGGER audit_capture_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_capture
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
CREATE TRIGGER audit_rows_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
CREATE TRIGGER audit_restored_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_restored
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
-- Fire under session_replication_role = replica as well.
ALTER TABLE invariants.audit_capture ENABLE ALWAYS TRIGGER audit_capture_append_only;
ALTER TABLE invariants.audit_rows ENABLE ALWAYS TRIGGER audit_rows_append_only;
ALTER TABLE invariants.audit_restored ENABLE ALWAYS TRIGGER audit_restored_append_only;
"#,
    name = "audit_log_append_only",
    requires = ["schema"]
);

crate::c_function!(audit_entries, pg_finfo_audit_entries, audit_entries_of);

/// `invariants.audit_entries(columns text[], types oid[], formats text,
/// parts text, images bytea) RETURNS SETOF jsonb`: the `row_data` of each
/// entry of one batch, in order: an object of the entry's fields named by
/// `columns` (for an UPDATE entry, `{"key": ..., "old": ..., "new": ...}`
/// as `parts` says), or the jsonb value itself when there are no columns.
/// A value whose type no longer exists is shown as the hex of its bytes.
fn audit_entries_of(fcinfo: pg_sys::FunctionCallInfo) -> Result<pg_sys::Datum, InvariantError> {
    // SAFETY: Postgres calls this as a set-returning function in
    // materialize mode (declared so), with five arguments of the declared
    // types; results go to the tuplestore Postgres set up.
    unsafe {
        let args = (*fcinfo).args.as_slice(5);
        let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        if rsinfo.is_null() || (*rsinfo).allowedModes & pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32 == 0 {
            // untestable: Postgres calls a set-returning function only in a set context
            return Err(InvariantError::new(
                Code::ERRCODE_FEATURE_NOT_SUPPORTED,
                "invariants.audit_entries must be called in a set context",
            ));
        }
        (*fcinfo).isnull = true;
        if args[1].isnull || args[2].isnull || args[4].isnull {
            return Ok(pg_sys::Datum::from(0));
        }
        let columns =
            Vec::<Option<String>>::from_polymorphic_datum(args[0].value, args[0].isnull, pg_sys::TEXTARRAYOID)
                .map(|names| names.into_iter().map(Option::unwrap_or_default).collect::<Vec<_>>());
        let types =
            Vec::<pg_sys::Oid>::from_polymorphic_datum(args[1].value, false, pg_sys::OIDARRAYOID).unwrap_or_default();
        let formats = String::from_polymorphic_datum(args[2].value, false, pg_sys::TEXTOID).unwrap_or_default();
        let parts = String::from_polymorphic_datum(args[3].value, args[3].isnull, pg_sys::TEXTOID);
        let images = pg_sys::pg_detoast_datum_packed(args[4].value.cast_mut_ptr());
        let images = std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(images) as *const u8,
            pgrx::varlena::varsize_any_exhdr(images),
        );
        let decoder = binary::Decoder::new(&types, &formats, binary::Purpose::Show);
        let image = JsonImage::new(columns.as_deref(), &types, parts.as_deref());

        let per_query = (*(*rsinfo).econtext).ecxt_per_query_memory;
        let old = pg_sys::MemoryContextSwitchTo(per_query);
        let store = pg_sys::tuplestore_begin_heap(true, false, pg_sys::work_mem);
        let desc = pg_sys::CreateTemplateTupleDesc(1);
        pg_sys::TupleDescInitEntry(desc, 1, c"row_data".as_ptr(), pg_sys::JSONBOID, -1, 0);
        (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
        (*rsinfo).setResult = store;
        (*rsinfo).setDesc = desc;
        pg_sys::MemoryContextSwitchTo(old);

        crate::privilege::with_canonical_formats(|| {
            let mut tuples = binary::tuples(images);
            while let Some(fields) = tuples.next_tuple() {
                let mut values = Vec::with_capacity(fields.len());
                let mut unreadable = Vec::with_capacity(fields.len());
                for (i, field) in fields.iter().enumerate() {
                    let decoded = field.map(|bytes| decoder.decode(i, bytes));
                    match (decoded, field) {
                        (Some(Ok(datum)), _) => {
                            values.push(Some(datum));
                            unreadable.push(None);
                        }
                        (Some(Err(_)), Some(bytes)) => {
                            values.push(None);
                            unreadable.push(Some(format!("\\x{}", hex(bytes))));
                        }
                        _ => {
                            values.push(None);
                            unreadable.push(None);
                        }
                    }
                }
                let row_data = image.row_data(&values, &unreadable)?;
                let mut value = [row_data];
                let mut null = [row_data.is_null()];
                pg_sys::tuplestore_putvalues(store, desc, value.as_mut_ptr(), null.as_mut_ptr());
            }
            Ok::<(), InvariantError>(())
        })?;
        Ok(pg_sys::Datum::from(0))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

crate::c_function!(audit_log_insert, pg_finfo_audit_log_insert, insert_entry);

/// INSTEAD OF INSERT on the view: an entry written by hand (by a role that
/// may insert into the log: its owner, say) becomes a capture of its own.
fn insert_entry(fcinfo: pg_sys::FunctionCallInfo) -> Result<pg_sys::Datum, InvariantError> {
    // SAFETY: Postgres calls this function only as a trigger.
    let trigger = unsafe { crate::errors::trigger_data(fcinfo)? };
    let tuple = trigger.tg_trigtuple;
    // SAFETY: the new row of an INSTEAD OF INSERT row trigger on the view,
    // described by the view's descriptor; each column is read by name, as
    // the type the view gives it.
    let field = |name: &str| -> (pg_sys::Datum, bool) {
        let name = CString::new(name).unwrap_or_default();
        unsafe {
            let desc = (*trigger.tg_relation).rd_att;
            let number = pg_sys::SPI_fnumber(desc, name.as_ptr());
            let mut is_null = true;
            let datum = if number > 0 {
                pg_sys::SPI_getbinval(tuple, desc, number, &mut is_null)
            } else {
                pg_sys::Datum::from(0)
            };
            (datum, is_null)
        }
    };
    // SAFETY: each value is of the view column's type.
    let text = |name: &str| unsafe {
        let (datum, is_null) = field(name);
        String::from_polymorphic_datum(datum, is_null, pg_sys::TEXTOID)
    };
    let op = text("op").unwrap_or_default();
    // SAFETY: as above.
    let (at, tbl) = unsafe {
        let (d, n) = field("at");
        let at = pgrx::datum::TimestampWithTimeZone::from_polymorphic_datum(d, n, pg_sys::TIMESTAMPTZOID);
        let (d, n) = field("tbl");
        let tbl = pg_sys::Oid::from_polymorphic_datum(d, n, pg_sys::OIDOID).map(crate::catalog::Regclass);
        (at, tbl)
    };
    let (row, row_null) = field("row_data");
    let encoder = binary::Encoder::for_jsonb();
    let mut image = Vec::new();
    // SAFETY: one jsonb value (or NULL), the encoder's one field.
    crate::privilege::with_canonical_formats(|| unsafe { encoder.encode_row(&[row], &[row_null], &mut image) });
    pinned(|| {
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "WITH c AS (
                     INSERT INTO invariants.audit_capture
                         (id, at, txid, op, tbl, schema_name, table_name, types, formats, db_user, \"session_user\",
                          application_name, client_addr, trigger_depth, statement)
                     VALUES (pg_catalog.nextval('invariants.audit_capture_id_seq'), coalesce($1, pg_catalog.now()),
                             pg_catalog.pg_current_xact_id(), $2, $3, coalesce($4, ''), coalesce($5, ''),
                             ARRAY['pg_catalog.jsonb'::pg_catalog.regtype::pg_catalog.oid], 'b',
                             coalesce($6, current_user::text), session_user, $7, pg_catalog.inet_client_addr(),
                             pg_catalog.pg_trigger_depth() - 1, $8)
                     RETURNING id)
                 INSERT INTO invariants.audit_rows (capture, first_id, entries, images)
                 SELECT id, pg_catalog.nextval('invariants.audit_entry_id_seq'), 1, $9 FROM c",
                &[
                    at.into(),
                    op.into(),
                    tbl.into(),
                    text("schema_name").into(),
                    text("table_name").into(),
                    text("db_user").into(),
                    text("application_name").into(),
                    text("statement").into(),
                    image.as_slice().into(),
                ],
            ))
        })
    });
    // SAFETY: returning the new row tells the executor the insert happened.
    Ok(pg_sys::Datum::from(trigger.tg_trigtuple))
}

crate::c_function!(audit_log_refuse, pg_finfo_audit_log_refuse, refuse_view_change);

/// INSTEAD OF UPDATE or DELETE on the view: refused.
fn refuse_view_change(fcinfo: pg_sys::FunctionCallInfo) -> Result<pg_sys::Datum, InvariantError> {
    // SAFETY: Postgres calls this function only as a trigger.
    let trigger = unsafe { crate::errors::trigger_data(fcinfo)? };
    let verb = match trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        _ => "DELETE",
    };
    Err(append_only_error(verb))
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_entries(columns text[], types oid[], formats text, parts text, images bytea)
    RETURNS SETOF jsonb LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'audit_entries';
COMMENT ON FUNCTION invariants.audit_entries(text[], oid[], text, text, bytea) IS
    'The row_data of each entry of one batch of the audit log, in order.';
CREATE VIEW invariants.audit_log AS
SELECT r.first_id + e.n - 1                         AS id,
       c.at,
       c.txid,
       c.op,
       c.tbl,
       c.schema_name,
       c.table_name,
       e.row_data,
       c.db_user,
       c."session_user",
       c.application_name,
       c.client_addr,
       c.trigger_depth + CASE WHEN (e.n - 1)::integer = ANY (r.cascaded) THEN 1 ELSE 0 END AS trigger_depth,
       c.statement,
       c.context,
       c.id                                         AS capture
  FROM invariants.audit_capture c
  JOIN invariants.audit_rows r ON r.capture = c.id
  CROSS JOIN LATERAL invariants.audit_entries(c.columns, c.types, c.formats, c.parts, r.images)
       WITH ORDINALITY AS e(row_data, n);
COMMENT ON VIEW invariants.audit_log IS
    'Append-only: one row per deleted, truncated, purged, repaired or updated row, or event. Only invariants.prune_audit removes entries.';
REVOKE ALL ON invariants.audit_log FROM PUBLIC;
CREATE FUNCTION invariants.audit_log_insert() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_insert';
CREATE FUNCTION invariants.audit_log_refuse() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_refuse';
CREATE TRIGGER audit_log_insert INSTEAD OF INSERT ON invariants.audit_log
    FOR EACH ROW EXECUTE FUNCTION invariants.audit_log_insert();
CREATE TRIGGER audit_log_refuse INSTEAD OF UPDATE OR DELETE ON invariants.audit_log
    FOR EACH ROW EXECUTE FUNCTION invariants.audit_log_refuse();
"#,
    name = "audit_log_view",
    requires = ["schema"]
);

/// Removes audit entries older than `older_than` (whole captures) and
/// records one `PRUNE` entry saying how many and up to when. Not executable
/// by PUBLIC.
#[pg_extern(schema = "invariants")]
fn prune_audit(older_than: Option<pgrx::datum::Interval>) -> i64 {
    pinned(|| {
        let Some(older_than) = older_than else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument older_than must not be NULL",
            );
        };
        let negative = crate::sql::one::<bool>("SELECT $1 < interval '0'", &[older_than.into()]);
        if negative == Some(true) {
            InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument older_than must not be negative",
            )
            .hint("Pass how old entries must be to go, e.g. interval '90 days'.")
            .raise();
        }
        let removed = as_extension_owner(|| {
            PRUNING.with(|p| p.set(true));
            let _reset = ResetPruning;
            spi(Spi::get_one_with_args::<i64>(
                "WITH old AS (SELECT id FROM invariants.audit_capture WHERE at < pg_catalog.now() - $1),
                      gone AS (DELETE FROM invariants.audit_rows r USING old WHERE r.capture = old.id
                               RETURNING r.entries AS n),
                      captures AS (DELETE FROM invariants.audit_capture c USING old WHERE c.id = old.id)
                 SELECT coalesce(sum(n), 0)::pg_catalog.int8 FROM gone",
                &[older_than.into()],
            ))
            .unwrap_or(0)
        });
        let what = crate::sql::one::<JsonB>(
            "SELECT jsonb_build_object('older_than', $1::text, 'before', now() - $1, 'removed', $2)",
            &[older_than.into(), removed.into()],
        );
        let log = crate::catalog::oid_of("invariants.audit_log").and_then(Table::lookup);
        if let (Some(log), Some(what)) = (log, what) {
            record_rows("PRUNE", &log, vec![what]);
        }
        removed
    })
}

/// Copies every row `query` returns (with `args`; its columns are the
/// table's, in order) to the log as an `op` capture of `table`. Inside a
/// trigger pass its data, so that a transition table can be named in the
/// query. `cascaded` says, by the position of a row, whether a cascade
/// removed it. Returns how many rows.
///
/// Who did it is read first, as the caller. The rows are then read as the
/// table's owner (see `privilege`); the log is written as the extension's
/// owner by statements that name only its own tables.
pub fn capture(
    op: &'static str,
    table: &Table,
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
    trigger: Option<*mut pg_sys::TriggerData>,
    cascaded: &RowFlags,
) -> usize {
    let encoder = binary::Encoder::for_table(table.oid, &crate::audit::excluded_columns(table.oid));
    let mut writer = CaptureWriter::new(EntryContext::current(op, table), encoder.layout());
    let query = Query {
        text: CString::new(query).unwrap_or_default(),
        args: crate::catalog::raw_args(args),
    };
    let read = crate::privilege::with_canonical_formats(|| {
        Spi::connect(|_client| {
            // SAFETY: inside an SPI connection; the trigger data is the one
            // Postgres passed to the running trigger; the query's columns
            // are the table's, those `encoder` writes.
            unsafe { append_query_rows(&mut writer, table, &query, &encoder, trigger, cascaded) }
        })
    });
    read.unwrap_or_else(|error| error.raise());
    writer.finish()
}

/// One flag per row of a query, by position: a bitset, so that a million
/// rows take 125 kB.
#[derive(Default)]
pub struct RowFlags(Vec<u64>);

impl RowFlags {
    pub fn set(&mut self, row: usize) {
        let word = row / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (row % 64);
    }

    pub fn get(&self, row: usize) -> bool {
        self.0.get(row / 64).is_some_and(|word| word & (1 << (row % 64)) != 0)
    }
}

/// A query and its arguments, as SPI takes them.
struct Query {
    text: CString,
    args: (Vec<pg_sys::Oid>, Vec<pg_sys::Datum>, Vec<std::ffi::c_char>),
}

/// Runs `query` through a cursor opened and read as `table`'s owner,
/// handing each row to `writer`; a row flagged in `cascaded` is one level
/// deeper.
///
/// # Safety
/// Call inside an SPI connection; `trigger`, if any, must be the data of the
/// trigger now running; the query's columns are those `encoder` writes.
unsafe fn append_query_rows(
    writer: &mut CaptureWriter,
    table: &Table,
    query: &Query,
    encoder: &binary::Encoder,
    trigger: Option<*mut pg_sys::TriggerData>,
    cascaded: &RowFlags,
) -> Result<(), InvariantError> {
    let width = encoder.width();
    let mut values = vec![pg_sys::Datum::from(0); width];
    let mut nulls = vec![true; width];
    let mut row = 0usize;
    // SAFETY: per the contract. Each fetched batch is read through the
    // tuple table SPI returned, deformed into buffers of its width, and
    // freed before the next; the cursor is closed on every path.
    unsafe {
        if let Some(trigger) = trigger {
            pg_sys::SPI_register_trigger_data(trigger);
        }
        let (mut types, mut values_in, nulls_in) = (query.args.0.clone(), query.args.1.clone(), query.args.2.clone());
        let portal = as_table_owner(table.oid, || {
            pg_sys::SPI_cursor_open_with_args(
                std::ptr::null(),
                query.text.as_ptr(),
                types.len() as i32,
                types.as_mut_ptr(),
                values_in.as_mut_ptr(),
                nulls_in.as_ptr(),
                false,
                0,
            )
        });
        let mut outcome = Ok(());
        while outcome.is_ok() {
            as_table_owner(table.oid, || pg_sys::SPI_cursor_fetch(portal, true, BATCH as i64));
            let fetched = pg_sys::SPI_processed as usize;
            let rows = pg_sys::SPI_tuptable;
            if fetched == 0 || rows.is_null() {
                break;
            }
            outcome = if (*(*rows).tupdesc).natts as usize != width {
                // untestable: the capture query selects exactly the image's columns
                Err(InvariantError::new(
                    Code::ERRCODE_INTERNAL_ERROR,
                    "the capture query returned an unexpected number of columns",
                ))
            } else {
                for i in 0..fetched {
                    let tuple = *(*rows).vals.add(i);
                    pg_sys::heap_deform_tuple(tuple, (*rows).tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
                    let deeper = cascaded.get(row);
                    row += 1;
                    writer.append(|out| encoder.encode_row(&values, &nulls, out), deeper);
                }
                Ok(())
            };
            pg_sys::SPI_freetuptable(rows);
        }
        pg_sys::SPI_cursor_close(portal);
        outcome
    }
}

/// Appends one entry per jsonb object in `rows`, as an `op` capture of
/// `table`.
pub fn record_rows(op: &'static str, table: &Table, rows: Vec<JsonB>) {
    if rows.is_empty() {
        return;
    }
    let encoder = binary::Encoder::for_jsonb();
    let mut writer = CaptureWriter::new(EntryContext::current(op, table), encoder.layout());
    crate::privilege::with_canonical_formats(|| {
        for row in rows {
            writer.append(
                |out| {
                    let datum = row.into_datum();
                    // SAFETY: one jsonb value (or NULL), the encoder's one
                    // field, made in the batch's memory.
                    unsafe { encoder.encode_row(&[datum.unwrap_or(pg_sys::Datum::from(0))], &[datum.is_none()], out) }
                },
                false,
            );
        }
    });
    writer.finish();
}

/// Appends one entry without a row image (a DROP, say) whose `row_data`
/// describes what happened.
pub fn record_event(op: &'static str, table: &Table, what: serde_json::Value) {
    record_rows(op, table, vec![JsonB(what)]);
}

struct ResetPruning;

impl Drop for ResetPruning {
    fn drop(&mut self) {
        PRUNING.with(|p| p.set(false));
    }
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION invariants.prune_audit(interval) FROM PUBLIC;",
    name = "prune_audit_privileges",
    requires = [prune_audit]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{count, error_of, sqlstate_of};
    use pgrx::prelude::*;

    fn add_entry() {
        Spi::run(
            "INSERT INTO invariants.audit_log (op, tbl, schema_name, table_name, row_data)
             VALUES ('DELETE', 'pg_class'::regclass, 'pg_catalog', 'pg_class', '{\"a\": 1}')",
        )
        .unwrap();
    }

    #[pg_test]
    fn audit_log_refuses_update_delete_truncate_even_for_superuser() {
        add_entry();
        let error = error_of("UPDATE invariants.audit_log SET op = 'DROP'").expect("update must fail");
        assert_eq!(error.sqlstate, "42501");
        assert!(error.message.contains("append-only"), "{error:?}");
        assert!(error.hint.contains("prune_audit"), "{error:?}");
        assert_eq!(
            (error.schema.as_str(), error.table.as_str()),
            ("invariants", "audit_log")
        );
        assert_eq!(sqlstate_of("DELETE FROM invariants.audit_log"), "42501");
        // The view itself cannot be truncated; the tables under it refuse.
        assert_eq!(sqlstate_of("TRUNCATE invariants.audit_log"), "42809");
        for (table, column) in [
            ("audit_capture", "op"),
            ("audit_rows", "capture"),
            ("audit_restored", "capture"),
        ] {
            assert_eq!(sqlstate_of(&format!("TRUNCATE invariants.{table}")), "42501", "{table}");
            assert_eq!(
                sqlstate_of(&format!("DELETE FROM invariants.{table}")),
                "42501",
                "{table}"
            );
            assert_eq!(
                sqlstate_of(&format!("UPDATE invariants.{table} SET {column} = {column}")),
                "42501",
                "{table}"
            );
        }
        // Also with replication-role tricks.
        // The view's own triggers cannot be ENABLE ALWAYS: under the replica
        // role its DELETE changes nothing, and the tables still refuse.
        Spi::run("SET LOCAL session_replication_role = replica").unwrap();
        Spi::run("DELETE FROM invariants.audit_log").unwrap();
        assert_eq!(sqlstate_of("DELETE FROM invariants.audit_rows"), "42501");
        assert_eq!(sqlstate_of("TRUNCATE invariants.audit_capture"), "42501");
        Spi::run("SET LOCAL session_replication_role = origin").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE'"),
            1
        );
    }

    #[pg_test]
    fn prune_audit_removes_old_entries_and_records_it() {
        add_entry();
        // Entries from this transaction are not older than a day: nothing goes.
        let removed = Spi::get_one::<i64>("SELECT invariants.prune_audit('1 day')").unwrap();
        assert_eq!(removed, Some(0));
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE'"),
            1
        );
        Spi::run(
            "INSERT INTO invariants.audit_log (at, op, schema_name, table_name)
             VALUES (now() - interval '3 days', 'DELETE', 'public', 'old_one')",
        )
        .unwrap();
        let removed = Spi::get_one::<i64>("SELECT invariants.prune_audit('1 day')").unwrap();
        assert_eq!(removed, Some(1));
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE table_name = 'old_one'"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM invariants.audit_log WHERE op = 'PRUNE'"), 2);
        assert_eq!(
            count("SELECT (row_data->>'removed')::bigint FROM invariants.audit_log WHERE op = 'PRUNE' ORDER BY id DESC LIMIT 1"),
            1
        );
    }

    #[pg_test]
    fn prune_audit_rejects_bad_arguments() {
        add_entry();
        let error = error_of("SELECT invariants.prune_audit(NULL)").expect("NULL must fail");
        assert_eq!(error.sqlstate, "22004");
        assert!(error.message.contains("older_than"), "{error:?}");
        let error = error_of("SELECT invariants.prune_audit('-1 day')").expect("negative must fail");
        assert_eq!(error.sqlstate, "22023");
        assert!(error.message.contains("older_than"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM invariants.audit_log"), 1);
    }

    #[pg_test]
    fn writes_as_the_extension_owner_ignore_the_callers_search_path() {
        // A function that would run with the extension owner's rights if the
        // caller's search_path were followed.
        Spi::run(
            "CREATE SCHEMA evil;
             CREATE TABLE evil.calls (who text);
             CREATE FUNCTION evil.unnest(jsonb[]) RETURNS SETOF jsonb LANGUAGE sql AS
               $$ INSERT INTO evil.calls VALUES (current_user) RETURNING '{}'::jsonb $$;
             CREATE TABLE rep (id int PRIMARY KEY, status text, sent_at timestamptz);
             INSERT INTO rep VALUES (1, 'sent', NULL);
             SELECT invariants.require_not_null('rep', 'sent_at', 'status', ARRAY['sent'],
                      repair => '{\"set\": {\"status\": \"new\"}}');
             SET LOCAL search_path = evil, pg_catalog, public;",
        )
        .unwrap();
        Spi::run("SELECT * FROM invariants.repair('public.rep')").unwrap();
        Spi::run("SET LOCAL search_path = public").unwrap();
        assert_eq!(count("SELECT count(*) FROM evil.calls"), 0);
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'REPAIR'"),
            1
        );
    }
}
