//! Rows deleted from each protected table in the current transaction.
//!
//! The audit's statement-level AFTER DELETE trigger adds each statement's
//! rows (cascaded deletes arrive through the child's own trigger) and fails
//! the statement past the table's limit. Rows of a statement that failed, or
//! of a subtransaction that rolled back (a savepoint, a PL/pgSQL exception
//! block), are given back: each addition is tagged with the subtransaction
//! that made it, and an aborted subtransaction's additions are dropped
//! (see `xact.rs`).
use std::cell::RefCell;

use pgrx::pg_sys::{self, Oid, SubTransactionId};

use super::{protected_table, switch_allows};
use crate::catalog::Table;
use crate::errors::{Code, InvariantError};
use crate::guc::MAX_DELETE_ROWS;

struct Deleted {
    relid: Oid,
    subxact: SubTransactionId,
    rows: i64,
}

thread_local! {
    static DELETED: RefCell<Vec<Deleted>> = const { RefCell::new(Vec::new()) };
}

/// Adds `rows` deleted from `table` by the current statement, failing it
/// when the transaction's total goes past the limit.
pub fn add(table: &Table, rows: i64) -> Result<(), InvariantError> {
    if rows == 0 {
        return Ok(());
    }
    // Counted for the protected table itself: deleting from its partitions
    // one by one draws on the same budget.
    let Some((protected_oid, table_limit)) = protected_table(table.oid) else {
        return Ok(());
    };
    let protected = Table::lookup(protected_oid).unwrap_or_else(|| table.clone());
    let table = &protected;
    let override_limit = MAX_DELETE_ROWS.get();
    let limit = if override_limit >= 0 {
        switch_allows("invariants.max_delete_rows", table)?;
        override_limit as i64
    } else {
        table_limit
    };
    let before: i64 = DELETED.with(|d| d.borrow().iter().filter(|e| e.relid == table.oid).map(|e| e.rows).sum());
    let total = before + rows;
    if limit > 0 && total > limit {
        return Err(InvariantError::new(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "DELETE refused: it would remove {total} rows of protected table {} in this transaction, more than its limit of {limit}",
                table.display()
            ),
        )
        .detail(format!("{before} rows were deleted earlier in this transaction, {rows} by this statement (cascades included)."))
        .hint(format!(
            "If this is intended, its owner can raise the limit for this transaction: SET LOCAL invariants.max_delete_rows = {total}; (0 = no limit)."
        ))
        .table(&table.schema, &table.name));
    }
    // SAFETY: reads the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    DELETED.with(|d| {
        d.borrow_mut().push(Deleted {
            relid: table.oid,
            subxact,
            rows,
        })
    });
    Ok(())
}

/// Gives back what an aborted subtransaction deleted. Subtransaction ids
/// grow within a transaction: the aborted one's children have larger ids and
/// are gone with it.
pub fn forget_subxact(subxact: SubTransactionId) {
    DELETED.with(|d| d.borrow_mut().retain(|e| e.subxact < subxact));
}

pub fn forget_all() {
    DELETED.with(|d| d.borrow_mut().clear());
}
