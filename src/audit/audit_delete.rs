//! `invariants.audit_delete()`: AFTER DELETE ... REFERENCING OLD TABLE FOR
//! EACH STATEMENT. Copies the whole transition table to the audit log with
//! one set-based statement. Rows removed by `ON DELETE CASCADE` arrive
//! through the child table's own trigger; Postgres fires it at the end of
//! the outer statement (so `pg_trigger_depth()` cannot tell them apart), and
//! they are recognised instead by their parent row being gone: their
//! `trigger_depth` is one more than a direct delete's.
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};

use pgrx::prelude::*;

use crate::audit_log::{capture, RowFlags};
use crate::catalog::{cascade_keys, quote_ident, spi, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};
use crate::relcache;

pub const TRIGGER_NAME: &str = pg_invariants_core::triggers::AUDIT_DELETE.name;

crate::c_function!(audit_delete, pg_finfo_audit_delete, audit_delete_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_delete() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_delete';
"#,
    name = "audit_delete",
    requires = ["schema"]
);

fn audit_delete_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    // SAFETY: the trigger manager passes a valid trigger and relation.
    let (relid, old_table) = unsafe {
        let old = (*trigger.tg_trigger).tgoldtable;
        (
            (*trigger.tg_relation).rd_id,
            (!old.is_null()).then(|| CStr::from_ptr(old).to_string_lossy().into_owned()),
        )
    };
    let event = trigger.tg_event;
    let Some(old_table) = old_table.filter(|_| event & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_DELETE)
    else {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.audit_delete() must run AFTER DELETE ... REFERENCING OLD TABLE ... FOR EACH STATEMENT",
        ));
    };
    pinned(|| {
        let Some(table) = Table::lookup(relid) else {
            return Ok(());
        };
        // Rows `purge` removes are logged by it, as PURGE.
        if crate::soft_delete::soft_delete::purging(relid) {
            return Ok(());
        }
        let source = format!("{} AS o", quote_ident(&old_table));
        let trigger_data = Some(trigger as *const _ as *mut _);
        let cascaded = cascaded_rows(relid, &source, trigger_data);
        let rows = capture(
            "DELETE",
            &table,
            &format!("SELECT o.* FROM {source}"),
            &[],
            trigger_data,
            &cascaded,
        );
        crate::guards::budget::add(crate::guards::budget::Kind::Delete, &table, rows as i64)
    })?;
    Ok(Datum::from(0))
}

/// Flags the rows of the transition table `source` that a cascade removed:
/// a parent they reference through an ON DELETE CASCADE foreign key no
/// longer exists. Each parent is read as its owner, as Postgres' own
/// foreign-key checks read it.
fn cascaded_rows(relid: pg_sys::Oid, source: &str, trigger: Option<*mut pg_sys::TriggerData>) -> RowFlags {
    let conditions = relcache::get_or_build(relid, || CascadeConditions(cascade_conditions(relid)));
    let mut flags = RowFlags::default();
    for (parent, condition) in &conditions.0 {
        let sql = format!("SELECT {condition} FROM {source}");
        as_table_owner(*parent, || {
            Spi::connect(|client| {
                if let Some(trigger) = trigger {
                    // SAFETY: the data of the trigger now running.
                    unsafe { pg_sys::SPI_register_trigger_data(trigger) };
                }
                let rows = spi(client.select(&sql, None, &[]));
                for (i, row) in rows.enumerate() {
                    if spi(row.get::<bool>(1)) == Some(true) {
                        flags.set(i);
                    }
                }
            })
        });
    }
    flags
}

/// Per parent table, the SQL condition on a deleted row `o` that the parent
/// row it references through an ON DELETE CASCADE key no longer exists.
/// Cached per relation.
struct CascadeConditions(Vec<(pg_sys::Oid, String)>);

fn cascade_conditions(relid: pg_sys::Oid) -> Vec<(pg_sys::Oid, String)> {
    cascade_keys(relid, false)
        .iter()
        .map(|key| {
            let present = key
                .child_columns
                .iter()
                .map(|c| format!("o.{} IS NOT NULL", quote_ident(c)))
                .collect::<Vec<_>>();
            let condition = format!(
                "({} AND NOT EXISTS (SELECT FROM {} p WHERE {}))",
                present.join(" AND "),
                key.parent.qualified(),
                key.join_as("o", "p")
            );
            (key.parent.oid, condition)
        })
        .collect()
}
