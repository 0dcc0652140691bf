//! `invariants.before_truncate()`: BEFORE TRUNCATE FOR EACH STATEMENT, on
//! every table that is audited, protected or a soft-delete table (and each
//! of their partitions and inheritance children). Postgres fires it for each
//! table a TRUNCATE reaches, `TRUNCATE ... CASCADE` included.
//!
//! A protected or soft-delete table refuses the TRUNCATE unless its owner
//! allows it (`invariants.allow_truncate`). Every row is still readable
//! here: an audited table's rows are copied to the audit log first (a table
//! holding more rows than its capture limit refuses), and an allowed
//! TRUNCATE of a table that is not audited is recorded as a `DROP` entry.
use pgrx::pg_sys::{self, Datum};

use crate::audit_log::{capture, record_event, RowFlags};
use crate::catalog::Table;
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};
use crate::registry::Trigger;
use crate::table_config::TableConfig;
use pg_invariants_core::triggers;
use pgrx::pg_sys::Oid;

pub const TRIGGER_NAME: &str = triggers::TRUNCATE_GUARD.name;

crate::c_function!(before_truncate, pg_finfo_before_truncate, before_truncate_body);
// 0.1.0's name of this trigger function, kept so that tables keep their
// TRUNCATE guard between installing this version and ALTER EXTENSION
// UPDATE (which moves them to before_truncate).
crate::c_function!(audit_truncate, pg_finfo_audit_truncate, before_truncate_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.before_truncate() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'before_truncate';
"#,
    name = "before_truncate",
    requires = ["schema"]
);

/// The truncate guard of a protected table (itself or through a table
/// above it).
pub fn triggers(relid: Oid, _lineage: &[Oid]) -> Vec<Trigger> {
    if !crate::guards::is_protected(relid) {
        return Vec::new();
    }
    vec![triggers::TRUNCATE_GUARD.on_table()]
}

fn before_truncate_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    if trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_TRUNCATE {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.before_truncate() must run BEFORE TRUNCATE ... FOR EACH STATEMENT",
        ));
    }
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    pinned(|| guard_and_capture(relid))
}

/// Refuses the TRUNCATE of a protected or soft-delete table (unless its
/// owner allows it), or of an audited one holding more rows than its
/// capture limit; copies an audited table's rows.
fn guard_and_capture(relid: pg_sys::Oid) -> Result<Datum, InvariantError> {
    let Some(table) = Table::lookup(relid) else {
        return Ok(Datum::from(0));
    };
    let config = TableConfig::of(relid);
    let kind = if config.protection.is_some() {
        Some("protected table")
    } else if config.soft_delete.is_some() {
        Some("soft-delete table")
    } else {
        None
    };
    if let Some(kind) = kind {
        if !crate::guc::ALLOW_TRUNCATE.get() {
            return Err(InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("TRUNCATE of {kind} {} refused", table.display()),
            )
            .detail(format!("A {kind} is not emptied by accident; nothing was removed."))
            .hint("If this is intended, the table's owner can SET LOCAL invariants.allow_truncate = on and run it again (an audited table's rows are copied to invariants.audit_log first).")
            .table(&table.schema, &table.name));
        }
        crate::guards::switch_allows("invariants.allow_truncate", &table)?;
    }
    let Some(limit) = config.audit.as_ref().map(|a| a.truncate_capture_limit) else {
        // Let through by the owner's switch without a copy: recorded.
        let rows = as_table_owner(relid, || {
            crate::sql::one::<i64>(&format!("SELECT count(*) FROM ONLY {}", table.qualified()), &[])
        })
        .unwrap_or(0);
        record_event(
            "DROP",
            &table,
            serde_json::json!({"object_type": "rows", "object": format!("TRUNCATE of {}", table.display()), "rows": rows}),
        );
        return Ok(Datum::from(0));
    };
    let count_sql = format!(
        "SELECT count(*) FROM (SELECT FROM ONLY {} LIMIT {}) s",
        table.qualified(),
        limit.saturating_add(1)
    );
    let rows = as_table_owner(relid, || crate::sql::one::<i64>(&count_sql, &[])).unwrap_or(0);
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
    let query = format!("SELECT o.* FROM ONLY {} AS o", table.qualified());
    capture("TRUNCATE", &table, &query, &[], None, &RowFlags::default());
    Ok(Datum::from(0))
}
