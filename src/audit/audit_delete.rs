//! `invariants.audit_delete()`: AFTER DELETE ... REFERENCING OLD TABLE FOR
//! EACH STATEMENT. Copies the whole transition table to the audit log with
//! one set-based statement. Rows removed by `ON DELETE CASCADE` arrive
//! through the child table's own trigger; Postgres fires it at the end of
//! the outer statement (so `pg_trigger_depth()` cannot tell them apart), and
//! they are recognised instead by their parent row being gone: their
//! `trigger_depth` is one more than a direct delete's.
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};

use crate::audit_log::capture_at_depth;
use crate::catalog::{cascade_keys, quote_ident, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::relcache;

pub const TRIGGER_NAME: &str = "invariants_audit_delete";

crate::trigger_function!(audit_delete, pg_finfo_audit_delete, audit_delete_body);

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
    let Some(table) = Table::lookup(relid) else {
        return Ok(Datum::from(0));
    };
    let source = format!("{} AS o", quote_ident(&old_table));
    let cascaded = relcache::get_or_build(relid, || CascadeCondition(cascaded_condition(relid)));
    let depth = match &cascaded.0 {
        Some(condition) => format!("pg_catalog.pg_trigger_depth() + CASE WHEN {condition} THEN 1 ELSE 0 END"),
        None => "pg_catalog.pg_trigger_depth()".into(),
    };
    // Rows `purge` removes are logged by it, as PURGE.
    if crate::soft_delete::soft_delete::purging(relid) {
        return Ok(Datum::from(0));
    }
    let trigger_data = Some(trigger as *const _ as *mut _);
    let rows = capture_at_depth("DELETE", &table, &source, &depth, trigger_data);
    crate::guards::delete_budget::add(&table, rows as i64)?;
    Ok(Datum::from(0))
}

/// The SQL condition, on a deleted row `o`, that a parent it references
/// through an ON DELETE CASCADE foreign key no longer exists; None when the
/// table has no such key. Cached per relation.
struct CascadeCondition(Option<String>);

fn cascaded_condition(relid: pg_sys::Oid) -> Option<String> {
    let conditions: Vec<String> = cascade_keys(relid, false)
        .iter()
        .map(|key| {
            let present = key
                .child_columns
                .iter()
                .map(|c| format!("o.{} IS NOT NULL", quote_ident(c)))
                .collect::<Vec<_>>();
            format!(
                "({} AND NOT EXISTS (SELECT FROM {} p WHERE {}))",
                present.join(" AND "),
                key.parent.qualified(),
                key.join_as("o", "p")
            )
        })
        .collect();
    (!conditions.is_empty()).then(|| conditions.join(" OR "))
}
