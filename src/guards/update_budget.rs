//! `invariants.update_budget()`: AFTER UPDATE ... REFERENCING NEW TABLE
//! FOR EACH STATEMENT, on protected tables given a `max_update_rows`.
//! Counts the statement's updated rows (the transition table's size: no
//! row is read) against the table's budget for the transaction.
use pgrx::pg_sys::{self, Datum, Oid};

use super::budget::{self, Kind};
use crate::catalog::Table;
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::pinned;
use crate::registry::Trigger;
use pg_invariants_core::triggers;

pub const TRIGGER_NAME: &str = triggers::UPDATE_BUDGET.name;

crate::c_function!(update_budget, pg_finfo_update_budget, update_budget_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.update_budget() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'update_budget';
"#,
    name = "update_budget",
    requires = ["schema"]
);

/// The counting trigger, for a table protected with a `max_update_rows`
/// (itself or through a partitioned table above it).
pub fn triggers(relid: Oid, _lineage: &[Oid]) -> Vec<Trigger> {
    if super::protection(relid).and_then(|p| p.max_update_rows).is_none() {
        return Vec::new();
    }
    vec![triggers::UPDATE_BUDGET.on_table()]
}

fn update_budget_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let event = trigger.tg_event;
    if event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_UPDATE
        || event & pg_sys::TRIGGER_EVENT_ROW != 0
        || trigger.tg_newtable.is_null()
    {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.update_budget() must run AFTER UPDATE ... REFERENCING NEW TABLE ... FOR EACH STATEMENT",
        ));
    }
    // A restore's or repair's own UPDATEs are its owner's deliberate work.
    if crate::xact::in_own_update() {
        return Ok(Datum::from(0));
    }
    // SAFETY: the running trigger's relation and transition table.
    let (relid, rows) = unsafe {
        (
            (*trigger.tg_relation).rd_id,
            pg_sys::tuplestore_tuple_count(trigger.tg_newtable),
        )
    };
    if rows == 0 {
        return Ok(Datum::from(0));
    }
    pinned(|| match Table::lookup(relid) {
        Some(table) => budget::add(Kind::Update, &table, rows),
        None => Ok(()),
    })?;
    Ok(Datum::from(0))
}
