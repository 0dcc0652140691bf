//! `invariants.enable_audit` and `invariants.disable_audit`: install and
//! remove the capture triggers on a table (and each of its partitions, so
//! that a DELETE or TRUNCATE naming a partition is captured as well).
use pgrx::prelude::*;

use super::audit_delete;
use crate::catalog::{spi, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, pinned};
use crate::registry::{self, Level, Timing, Trigger};
use pgrx::pg_sys::Oid;

/// Starts capturing every row removed from `tbl` by DELETE or TRUNCATE.
/// Calling it again changes the limit and installs the triggers on
/// partitions attached since.
#[pg_extern(schema = "invariants")]
fn enable_audit(tbl: Option<Regclass>, truncate_capture_limit: default!(Option<i64>, "1000000")) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let limit = match truncate_capture_limit {
            None => fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument truncate_capture_limit must not be NULL",
            ),
            Some(limit) if limit < 0 => InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument truncate_capture_limit must not be negative",
            )
            .hint(
                "It is the most rows a TRUNCATE may remove (and copy first); 0 refuses any TRUNCATE of a non-empty table.",
            )
            .raise(),
            Some(limit) => limit,
        };
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "INSERT INTO invariants.audited_tables (tbl, truncate_capture_limit, enabled_by) VALUES ($1, $2, session_user)
                 ON CONFLICT (tbl) DO UPDATE SET truncate_capture_limit = EXCLUDED.truncate_capture_limit",
                &[Regclass(table.oid).into(), limit.into()],
            ))
        });
        registry::sync_tree(table.oid);
    })
}

/// Stops capturing; entries already in the log stay. Harmless when the
/// table is not audited.
#[pg_extern(schema = "invariants")]
fn disable_audit(tbl: Option<Regclass>) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        if crate::guards::protected_limit(table.oid).is_some() {
            InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{} is protected, and its guards need its audit", table.display()),
            )
            .hint(format!("Call invariants.unprotect('{}') first.", table.display()))
            .raise();
        }
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "DELETE FROM invariants.audited_tables WHERE tbl = $1",
                &[Regclass(table.oid).into()],
            ))
        });
        registry::sync_tree(table.oid);
    })
}

/// The capture trigger of DELETE, for a table audited itself or through a
/// table above it. (TRUNCATE is captured by the truncate guard.)
pub fn triggers(relid: Oid, _lineage: &[Oid]) -> Vec<Trigger> {
    if super::truncate_capture_limit(relid).is_none() {
        return Vec::new();
    }
    vec![Trigger {
        name: audit_delete::TRIGGER_NAME.into(),
        capability: "audit",
        function: "audit_delete",
        args: Vec::new(),
        timing: Timing::After,
        events: registry::DELETE,
        columns: Vec::new(),
        level: Level::Statement,
        old_table: Some("invariants_deleted"),
        when_old_set: None,
    }]
}
