//! `invariants.audit_log` is append-only: UPDATE, DELETE and TRUNCATE fail
//! for every role, superusers included; only `invariants.prune_audit`
//! removes entries, and it records that it did.
mod row_image;
mod writer;

use std::cell::Cell;
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use row_image::RowImage;
use writer::{EntryContext, LogWriter};

use crate::catalog::{spi, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, as_table_owner, pinned};

thread_local! {
    // Set only while prune_audit deletes; nothing a user runs can set it.
    static PRUNING: Cell<bool> = const { Cell::new(false) };
}

crate::c_function!(audit_log_append_only, pg_finfo_audit_log_append_only, refuse_changes);

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
    Err(InvariantError::new(
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("invariants.audit_log is append-only: {verb} is not allowed"),
    )
    .detail("The audit log keeps the only copy of removed rows; no role may change or remove its entries.")
    .hint("To remove old entries call invariants.prune_audit(older_than interval), which records the pruning.")
    .table("invariants", "audit_log"))
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_log_append_only() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_append_only';
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
-- Fire under session_replication_role = replica as well.
ALTER TABLE invariants.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
"#,
    name = "audit_log_append_only",
    requires = ["schema"]
);

/// Removes audit entries older than `older_than` and records one `PRUNE`
/// entry saying how many and up to when. Not executable by PUBLIC.
#[pg_extern(schema = "invariants")]
fn prune_audit(older_than: Option<pgrx::datum::Interval>) -> i64 {
    pinned(|| {
        let Some(older_than) = older_than else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument older_than must not be NULL",
            );
        };
        let negative = spi(Spi::get_one_with_args::<bool>(
            "SELECT $1 < interval '0'",
            &[older_than.into()],
        ));
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
                "WITH gone AS (DELETE FROM invariants.audit_log WHERE at < now() - $1 RETURNING 1)
                 SELECT count(*) FROM gone",
                &[older_than.into()],
            ))
            .unwrap_or(0)
        });
        let what = spi(Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT jsonb_build_object('older_than', $1::text, 'before', now() - $1, 'removed', $2)",
            &[older_than.into(), removed.into()],
        ));
        let log = crate::catalog::oid_of("invariants.audit_log").and_then(Table::lookup);
        if let (Some(log), Some(what)) = (log, what) {
            record_rows("PRUNE", &log, vec![what]);
        }
        removed
    })
}

/// Copies every row of `source` (a FROM item aliased `o`) to the log as an
/// `op` entry of `table`. Inside a trigger pass its data, so that a
/// transition table can be named in `source`. `cascaded` says, by the
/// position of a row in `source`, whether a cascade removed it (its
/// `trigger_depth` is then one more). Returns how many rows.
///
/// Who did it is read first, as the caller. The rows are then read as the
/// table's owner (see `privilege`); the writer needs no rights at all, as it
/// plans no query.
pub fn capture(
    op: &'static str,
    table: &Table,
    source: &str,
    trigger: Option<*mut pg_sys::TriggerData>,
    cascaded: &RowFlags,
) -> usize {
    let entry = EntryContext::current(op, table);
    let written = as_table_owner(table.oid, || {
        let image = RowImage::for_table(table.oid);
        let columns = match image {
            Some(_) => "o.*",
            None => "pg_catalog.to_jsonb(o)",
        };
        let query = CString::new(format!("SELECT {columns} FROM {source}")).unwrap_or_default();
        Spi::connect(|_client| {
            let mut writer = LogWriter::open(&entry)?;
            // SAFETY: inside an SPI connection; the trigger data is the one
            // Postgres passed to the running trigger; the query's columns
            // are those of `image`, or one image.
            unsafe {
                append_query_rows(
                    &mut writer,
                    &query,
                    image.as_ref(),
                    trigger,
                    entry.trigger_depth,
                    cascaded,
                )?
            };
            Ok::<usize, InvariantError>(writer.finish())
        })
    });
    written.unwrap_or_else(|error| error.raise())
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

/// Runs `query` through a cursor, handing each row to `writer`. Its rows
/// are the columns `image` reads, or without `image` one jsonb image; a
/// row flagged in `cascaded` is written at `depth` + 1.
///
/// # Safety
/// Call inside an SPI connection; `trigger`, if any, must be the data of the
/// trigger now running.
unsafe fn append_query_rows(
    writer: &mut LogWriter,
    query: &CStr,
    image: Option<&RowImage>,
    trigger: Option<*mut pg_sys::TriggerData>,
    depth: i32,
    cascaded: &RowFlags,
) -> Result<(), InvariantError> {
    // Images are built here and copied by the writer: reset after each row.
    let mut per_row = PgMemoryContexts::new("pg_invariants row images");
    let width = image.map_or(1, RowImage::width);
    let mut values = vec![pg_sys::Datum::from(0); width];
    let mut nulls = vec![true; width];
    let mut row = 0usize;
    // SAFETY: per the contract. Each fetched batch is read through the
    // tuple table SPI returned, deformed into buffers of its width, and
    // freed before the next.
    unsafe {
        if let Some(trigger) = trigger {
            pg_sys::SPI_register_trigger_data(trigger);
        }
        let portal = pg_sys::SPI_cursor_open_with_args(
            std::ptr::null(),
            query.as_ptr(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            0,
        );
        let mut outcome = Ok(());
        while outcome.is_ok() {
            pg_sys::SPI_cursor_fetch(portal, true, FETCH_ROWS);
            let fetched = pg_sys::SPI_processed as usize;
            let rows = pg_sys::SPI_tuptable;
            if fetched == 0 || rows.is_null() {
                break;
            }
            outcome = if (*(*rows).tupdesc).natts as usize != width {
                Err(InvariantError::new(
                    Code::ERRCODE_INTERNAL_ERROR,
                    "the capture query returned an unexpected number of columns",
                ))
            } else {
                (0..fetched).try_for_each(|i| {
                    let tuple = *(*rows).vals.add(i);
                    pg_sys::heap_deform_tuple(tuple, (*rows).tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
                    let built = match image {
                        Some(image) => Some(per_row.switch_to(|_| image.build(&values, &nulls))?),
                        None => (!nulls[0]).then_some(values[0]),
                    };
                    writer.append(built, depth + i32::from(cascaded.get(row)));
                    row += 1;
                    per_row.reset();
                    Ok(())
                })
            };
            pg_sys::SPI_freetuptable(rows);
        }
        pg_sys::SPI_cursor_close(portal);
        outcome
    }
}

/// Rows fetched from the capture query at a time.
const FETCH_ROWS: i64 = 1000;

/// Appends one entry per row image in `rows`, for `op` on `table`.
pub fn record_rows(op: &'static str, table: &Table, rows: Vec<pgrx::JsonB>) {
    if rows.is_empty() {
        return;
    }
    let entry = EntryContext::current(op, table);
    let written = LogWriter::open(&entry).map(|mut writer| {
        for row in rows {
            writer.append(row.into_datum(), entry.trigger_depth);
        }
        writer.finish()
    });
    if let Err(error) = written {
        error.raise();
    }
}

/// Appends one entry without a row image (a DROP, say) whose `row_data`
/// describes what happened.
pub fn record_event(op: &'static str, table: &Table, what: serde_json::Value) {
    record_rows(op, table, vec![pgrx::JsonB(what)]);
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
        assert_eq!(sqlstate_of("TRUNCATE invariants.audit_log"), "42501");
        // Also with replication-role tricks.
        Spi::run("SET LOCAL session_replication_role = replica").unwrap();
        assert_eq!(sqlstate_of("DELETE FROM invariants.audit_log"), "42501");
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
