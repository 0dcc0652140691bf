//! Rows deleted and rows updated of each protected table in the current
//! transaction.
//!
//! The audit's statement-level AFTER DELETE trigger adds each statement's
//! deleted rows (cascaded deletes arrive through the child's own trigger),
//! the update budget's AFTER UPDATE trigger each statement's updated rows;
//! either fails the statement past the table's limit. Rows of a statement
//! that failed, or of a subtransaction that rolled back (a savepoint, a
//! PL/pgSQL exception block), are given back: each addition is tagged with
//! the subtransaction that made it, and an aborted subtransaction's
//! additions are dropped (see `xact.rs`).
use std::cell::RefCell;

use pgrx::pg_sys::{self, Oid, SubTransactionId};

use super::{protection, switch_allows};
use crate::catalog::Table;
use crate::errors::{Code, InvariantError};
use crate::guc::{MAX_DELETE_ROWS, MAX_UPDATE_ROWS};

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delete,
    Update,
}

impl Kind {
    fn setting(self) -> &'static str {
        match self {
            Kind::Delete => "invariants.max_delete_rows",
            Kind::Update => "invariants.max_update_rows",
        }
    }

    /// The session's override of the tables' limits; negative: none.
    fn override_limit(self) -> i32 {
        match self {
            Kind::Delete => MAX_DELETE_ROWS.get(),
            Kind::Update => MAX_UPDATE_ROWS.get(),
        }
    }
}

struct Counted {
    relid: Oid,
    kind: Kind,
    subxact: SubTransactionId,
    rows: i64,
}

thread_local! {
    static COUNTED: RefCell<Vec<Counted>> = const { RefCell::new(Vec::new()) };
}

/// Adds `rows` deleted or updated in `table` by the current statement,
/// failing it when the transaction's total goes past the limit.
pub fn add(kind: Kind, table: &Table, rows: i64) -> Result<(), InvariantError> {
    if rows == 0 {
        return Ok(());
    }
    // Counted for the protected table itself: changing its partitions one
    // by one draws on the same budget.
    let Some(protection) = protection(table.oid) else {
        return Ok(());
    };
    let table_limit = match kind {
        Kind::Delete => protection.max_delete_rows,
        Kind::Update => match protection.max_update_rows {
            Some(limit) => limit,
            None => return Ok(()),
        },
    };
    let protected = Table::lookup(protection.table).unwrap_or_else(|| table.clone());
    let table = &protected;
    let override_limit = kind.override_limit();
    let limit = if override_limit >= 0 {
        switch_allows(kind.setting(), table)?;
        override_limit as i64
    } else {
        table_limit
    };
    let before: i64 = COUNTED.with(|c| {
        c.borrow()
            .iter()
            .filter(|e| e.relid == table.oid && e.kind == kind)
            .map(|e| e.rows)
            .sum()
    });
    let total = before + rows;
    if limit > 0 && total > limit {
        let (statement, verb, done, extra) = match kind {
            Kind::Delete => ("DELETE", "remove", "deleted", " (cascades included)"),
            Kind::Update => ("UPDATE", "change", "updated", ""),
        };
        return Err(InvariantError::new(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "{statement} refused: it would {verb} {total} rows of protected table {} in this transaction, more than its limit of {limit}",
                table.display()
            ),
        )
        .detail(format!("{before} rows were {done} earlier in this transaction, {rows} by this statement{extra}."))
        .hint(format!(
            "If this is intended, its owner can raise the limit for this transaction: SET LOCAL {} = {total}; (0 = no limit).",
            kind.setting()
        ))
        .table(&table.schema, &table.name));
    }
    // SAFETY: reads the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    COUNTED.with(|c| {
        c.borrow_mut().push(Counted {
            relid: table.oid,
            kind,
            subxact,
            rows,
        })
    });
    Ok(())
}

/// Gives back what an aborted subtransaction deleted or updated.
/// Subtransaction ids grow within a transaction: the aborted one's children
/// have larger ids and are gone with it.
pub fn forget_subxact(subxact: SubTransactionId) {
    COUNTED.with(|c| c.borrow_mut().retain(|e| e.subxact < subxact));
}

pub fn forget_all() {
    COUNTED.with(|c| c.borrow_mut().clear());
}
