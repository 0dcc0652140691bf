//! `invariants.audit_truncate()`: BEFORE TRUNCATE FOR EACH STATEMENT. Every
//! row is still readable here, so it is copied to the audit log first; a
//! table holding more rows than its capture limit refuses the TRUNCATE.
//! Postgres fires it for each table a TRUNCATE reaches, `TRUNCATE ...
//! CASCADE` included.
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use super::truncate_capture_limit;
use crate::audit_log::{capture, RowFlags};
use crate::catalog::{spi, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};

pub const TRIGGER_NAME: &str = "invariants_audit_truncate";

crate::c_function!(audit_truncate, pg_finfo_audit_truncate, audit_truncate_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.audit_truncate() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_truncate';
"#,
    name = "audit_truncate",
    requires = ["schema"]
);

fn audit_truncate_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    if trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_TRUNCATE {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.audit_truncate() must run BEFORE TRUNCATE ... FOR EACH STATEMENT",
        ));
    }
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    pinned(|| guard_and_capture(relid))
}

/// Refuses the TRUNCATE of a protected table (unless its owner allows it),
/// or of one holding more rows than its capture limit; copies the rows.
fn guard_and_capture(relid: pg_sys::Oid) -> Result<Datum, InvariantError> {
    let Some(table) = Table::lookup(relid) else {
        return Ok(Datum::from(0));
    };
    let Some(limit) = truncate_capture_limit(relid) else {
        return Ok(Datum::from(0));
    };
    if crate::guards::protected_limit(relid).is_some() {
        if !crate::guc::ALLOW_TRUNCATE.get() {
            return Err(InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("TRUNCATE of protected table {} refused", table.display()),
            )
            .detail("Protected tables are not emptied by accident; nothing was removed.")
            .hint("If this is intended, the table's owner can SET LOCAL invariants.allow_truncate = on and run it again: the rows are copied to invariants.audit_log first.")
            .table(&table.schema, &table.name));
        }
        crate::guards::switch_allows("invariants.allow_truncate", &table)?;
    }
    let count_sql = format!(
        "SELECT count(*) FROM (SELECT FROM ONLY {} LIMIT {}) s",
        table.qualified(),
        limit.saturating_add(1)
    );
    let rows = as_table_owner(relid, || spi(Spi::get_one::<i64>(&count_sql))).unwrap_or(0);
    if rows > limit {
        return Err(InvariantError::new(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "TRUNCATE of {} refused: it holds more than {limit} rows, its truncate capture limit",
                table.display()
            ),
        )
        .detail("Audited tables are copied to invariants.audit_log before TRUNCATE, so that they can be restored; nothing was removed.")
        .hint(format!(
            "Raise the limit with SELECT invariants.enable_audit('{}', truncate_capture_limit => <rows>); or DELETE in batches (each batch is captured), or stop auditing with invariants.disable_audit.",
            table.display()
        ))
        .table(&table.schema, &table.name));
    }
    let source = format!("ONLY {} AS o", table.qualified());
    capture("TRUNCATE", &table, &source, None, &RowFlags::default());
    Ok(Datum::from(0))
}
