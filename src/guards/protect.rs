//! `invariants.protect` and `invariants.unprotect`.
use pgrx::prelude::*;

use crate::catalog::{spi, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_extension_owner, pinned};

/// Audit plus every guard in one call: TRUNCATE refused unless allowed, at
/// most `max_delete_rows` rows deleted per transaction (0 = no limit), with
/// `max_update_rows` at most that many rows updated per transaction, DROP
/// refused unless allowed. Calling it again changes the limits.
#[pg_extern(schema = "invariants")]
fn protect(
    tbl: Option<Regclass>,
    max_delete_rows: default!(Option<i64>, "1000"),
    max_update_rows: default!(Option<i64>, "NULL"),
) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let limit = match max_delete_rows {
            None => fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument max_delete_rows must not be NULL",
            ),
            Some(limit) if limit < 0 => InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument max_delete_rows must not be negative",
            )
            .hint("Pass the most rows one transaction may delete, or 0 for no limit.")
            .raise(),
            Some(limit) => limit,
        };
        if max_update_rows.is_some_and(|limit| limit < 0) {
            InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                "argument max_update_rows must not be negative",
            )
            .hint("Pass the most rows one transaction may update, 0 for no limit, or NULL not to count UPDATEs.")
            .raise();
        }
        // Audit first (an audited table keeps its settings): the delete
        // guard rides on its trigger.
        let audited = crate::sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM invariants.audited_tables WHERE tbl = $1)",
            &[Regclass(table.oid).into()],
        ) == Some(true);
        if !audited {
            spi(Spi::run_with_args(
                "SELECT invariants.enable_audit($1)",
                &[Regclass(table.oid).into()],
            ));
        }
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "INSERT INTO invariants.protected_tables (tbl, max_delete_rows, max_update_rows, protected_by)
                 VALUES ($1, $2, $3, session_user)
                 ON CONFLICT (tbl) DO UPDATE SET max_delete_rows = EXCLUDED.max_delete_rows,
                     max_update_rows = EXCLUDED.max_update_rows",
                &[Regclass(table.oid).into(), limit.into(), max_update_rows.into()],
            ))
        });
        crate::registry::sync_tree(table.oid);
    })
}

/// Removes the guards; the audit stays until `disable_audit`. Harmless when
/// the table is not protected.
#[pg_extern(schema = "invariants")]
fn unprotect(tbl: Option<Regclass>) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        as_extension_owner(|| {
            spi(Spi::run_with_args(
                "DELETE FROM invariants.protected_tables WHERE tbl = $1",
                &[Regclass(table.oid).into()],
            ))
        });
        crate::registry::sync_tree(table.oid);
    })
}
