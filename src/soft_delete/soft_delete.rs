//! The soft-delete triggers.
//!
//! `invariants.soft_delete_row()` (BEFORE DELETE, per row) keeps the row and
//! notes its address; a row already soft-deleted is kept as it is. At the end
//! of the statement `invariants.soft_delete_apply()` (AFTER DELETE, per
//! statement) sets the column with one UPDATE for all noted rows, run as the
//! table's owner like a foreign-key action, then soft-deletes their ON DELETE
//! CASCADE children, at any depth, with the same timestamp.
//!
//! A hard delete elsewhere that cascades into a soft-delete table (its
//! parent row is gone) is refused there, naming both tables: keeping the
//! child rows would leave orphans, and deleting them would lose them.
use std::cell::RefCell;

use pgrx::pg_sys::{self, Datum, Oid, SubTransactionId};
use pgrx::prelude::*;

use super::{cascade_keys, soft_delete_column};
use crate::catalog::{partition_tree, quote_ident, spi, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::as_table_owner;
use crate::relcache;
use crate::tuple::ColumnReader;

pub const ROW_TRIGGER: &str = "invariants_soft_delete";
pub const APPLY_TRIGGER: &str = "invariants_soft_delete_apply";
pub const CASCADE_TRIGGER: &str = "invariants_soft_delete_cascade";

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.soft_delete_row() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_row';
CREATE FUNCTION invariants.soft_delete_apply() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_apply';
CREATE FUNCTION invariants.soft_delete_cascade() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_cascade';
"#,
    name = "soft_delete_triggers",
    requires = ["schema"]
);

crate::trigger_function!(soft_delete_row, pg_finfo_soft_delete_row, row_body);
crate::trigger_function!(soft_delete_apply, pg_finfo_soft_delete_apply, apply_body);
crate::trigger_function!(soft_delete_cascade, pg_finfo_soft_delete_cascade, cascade_body);

/// A row kept by the row trigger, waiting for the statement's UPDATE.
struct Pending {
    relid: Oid,
    ctid: pg_sys::ItemPointerData,
    subxact: SubTransactionId,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    // Relations `purge` is deleting from: their rows really go.
    static PURGING: RefCell<Vec<Oid>> = const { RefCell::new(Vec::new()) };
    // Set while `cascade` walks the tree: the UPDATEs it runs fire the
    // cascade trigger again, which has nothing to add (and statement
    // triggers fire even for no row).
    static CASCADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn forget_subxact(subxact: SubTransactionId) {
    PENDING.with(|p| p.borrow_mut().retain(|e| e.subxact < subxact));
}

pub fn forget_all() {
    PENDING.with(|p| p.borrow_mut().clear());
    PURGING.with(|p| p.borrow_mut().clear());
}

/// True while `purge` deletes rows of `relid`.
pub fn purging(relid: Oid) -> bool {
    PURGING.with(|p| p.borrow().contains(&relid))
}

/// Runs `f` while rows of `table` (and its partitions) really go.
pub fn while_purging<R>(table: &Table, f: impl FnOnce() -> R) -> R {
    struct Reset(usize);
    impl Drop for Reset {
        fn drop(&mut self) {
            PURGING.with(|p| p.borrow_mut().truncate(self.0));
        }
    }
    let _reset = Reset(PURGING.with(|p| p.borrow().len()));
    PURGING.with(|p| p.borrow_mut().extend(partition_tree(table.oid)));
    f()
}

/// The soft-delete column of one relation, resolved once.
/// The soft-delete column of one relation, resolved once: None when the
/// relation is not a soft-delete table, Err when its declared column is gone.
struct SoftDeleteColumn(Option<Result<ColumnReader, InvariantError>>);

fn resolve_column(relid: Oid) -> SoftDeleteColumn {
    SoftDeleteColumn(soft_delete_column(relid).map(|name| {
        let table = Table::lookup(relid);
        crate::catalog::columns(relid).into_iter().find(|c| c.name == name).map(|c| ColumnReader::new(&c)).ok_or_else(
            || {
                let display = table.as_ref().map_or(String::new(), Table::display);
                InvariantError::new(
                    Code::ERRCODE_UNDEFINED_COLUMN,
                    format!("soft-delete column \"{name}\" of table {display} no longer exists; DELETE refused"),
                )
                .detail("Deleting for real would lose the rows that soft delete is there to keep.")
                .hint(format!(
                    "Enable soft delete again with the column's new name: SELECT invariants.enable_soft_delete('{display}', '<column>');"
                ))
            },
        )
    }))
}

fn row_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let event = trigger.tg_event;
    if event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_DELETE
        || event & pg_sys::TRIGGER_EVENT_ROW == 0
        || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_BEFORE
    {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.soft_delete_row() must run BEFORE DELETE ... FOR EACH ROW",
        ));
    }
    // SAFETY: the trigger manager passes an open relation and the old row.
    let (relid, desc, tuple) = unsafe {
        (
            (*trigger.tg_relation).rd_id,
            (*trigger.tg_relation).rd_att,
            trigger.tg_trigtuple,
        )
    };
    if purging(relid) {
        return Ok(Datum::from(tuple));
    }
    let column = relcache::get_or_build(relid, || resolve_column(relid));
    let column = match &column.0 {
        // Not (or no longer) a soft-delete table: delete as usual.
        None => return Ok(Datum::from(tuple)),
        Some(Err(error)) => return Err(error.clone()),
        Some(Ok(column)) => column,
    };
    // A row a foreign-key action deletes is noted even when it is already
    // soft-deleted: the statement step refuses the hard cascade it means.
    // SAFETY: the old row of this relation, from the trigger manager; the
    // flag is read from the session state.
    if unsafe { column.is_null_in(tuple, desc) || pg_sys::InNoForceRLSOperation() } {
        // SAFETY: t_self is the address of the row being deleted; reading
        // the subtransaction id has no side effect.
        let (ctid, subxact) = unsafe { ((*tuple).t_self, pg_sys::GetCurrentSubTransactionId()) };
        PENDING.with(|p| p.borrow_mut().push(Pending { relid, ctid, subxact }));
    }
    // Keep the row.
    Ok(Datum::from(0))
}

fn apply_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    let tree = partition_tree(relid);
    let mine: Vec<Pending> = PENDING.with(|p| {
        let (mine, rest): (Vec<Pending>, Vec<Pending>) =
            p.borrow_mut().drain(..).partition(|e| tree.contains(&e.relid));
        *p.borrow_mut() = rest;
        mine
    });
    let mut relids: Vec<Oid> = mine.iter().map(|e| e.relid).collect();
    relids.sort_by_key(|oid| oid.to_u32());
    relids.dedup();
    for rel in relids {
        let Some(table) = Table::lookup(rel) else { continue };
        let Some(column) = soft_delete_column(rel) else {
            continue;
        };
        let ctids: Vec<pg_sys::ItemPointerData> = mine.iter().filter(|e| e.relid == rel).map(|e| e.ctid).collect();
        refuse_hard_cascade(&table, &ctids)?;
        let sql = format!(
            "UPDATE ONLY {} SET {col} = pg_catalog.now() WHERE ctid OPERATOR(pg_catalog.=) ANY ($1) AND {col} IS NULL",
            table.qualified(),
            col = quote_ident(&column)
        );
        // Its AFTER UPDATE trigger soft-deletes the cascade children.
        as_table_owner(rel, || spi(Spi::run_with_args(&sql, &[ctids.into()])));
    }
    Ok(Datum::from(0))
}

/// `invariants.soft_delete_cascade()`: AFTER UPDATE OF <column> FOR EACH
/// STATEMENT. Whatever set the column (a DELETE turned into an UPDATE by
/// either path, or an UPDATE written by hand), rows soft-deleted now take
/// their cascade children with them.
fn cascade_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    cascade(relid);
    Ok(Datum::from(0))
}

/// One step of a cascade: the soft-delete children of a relation, each with
/// the UPDATE that soft-deletes the children of its rows deleted now.
struct CascadeStep {
    child: Oid,
    sql: String,
}

/// The cascade steps from one relation; empty when it is not a soft-delete
/// table that cascades, or has no soft-delete children. Cached per relation
/// (enabling or disabling soft delete invalidates the parents too).
struct CascadePlan(Vec<CascadeStep>);

fn cascade_plan(relid: Oid) -> std::rc::Rc<CascadePlan> {
    relcache::get_or_build(relid, || {
        let cascades = spi(Spi::get_one_with_args::<bool>(
            "SELECT bool_or(\"cascade\") FROM invariants.soft_delete_tables WHERE tbl::oid = ANY ($1)",
            &[crate::catalog::self_and_ancestors(relid).into()],
        ));
        let Some(parent_column) = soft_delete_column(relid).filter(|_| cascades == Some(true)) else {
            return CascadePlan(Vec::new());
        };
        let steps = cascade_keys(relid, true)
            .into_iter()
            .filter_map(|key| {
                let child_column = soft_delete_column(key.child.oid)?;
                let sql = format!(
                    "WITH done AS (
                         UPDATE {child} c SET {cc} = pg_catalog.now()
                          WHERE c.{cc} IS NULL
                            AND EXISTS (SELECT FROM {parent} p
                                         WHERE {join} AND p.{pc} OPERATOR(pg_catalog.=) pg_catalog.now())
                      RETURNING 1)
                     SELECT pg_catalog.count(*) FROM done",
                    child = key.child.qualified(),
                    parent = key.parent.qualified(),
                    join = key.join(),
                    cc = quote_ident(&child_column),
                    pc = quote_ident(&parent_column),
                );
                Some(CascadeStep {
                    child: key.child.oid,
                    sql,
                })
            })
            .collect();
        CascadePlan(steps)
    })
}

/// Fails when the kept rows are children whose ON DELETE CASCADE parent is
/// gone: the delete came from a hard delete of the parent.
fn refuse_hard_cascade(table: &Table, ctids: &[pg_sys::ItemPointerData]) -> Result<(), InvariantError> {
    for key in cascade_keys(table.oid, false) {
        let present = key
            .child_columns
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let orphans = spi(Spi::get_one_with_args::<i64>(
            &format!(
                "SELECT count(*) FROM ONLY {} c WHERE c.ctid = ANY ($1) AND {present}
                    AND NOT EXISTS (SELECT FROM {} p WHERE {})",
                table.qualified(),
                key.parent.qualified(),
                key.join()
            ),
            &[ctids.to_vec().into()],
        ))
        .unwrap_or(0);
        if orphans > 0 {
            return Err(InvariantError::new(
                Code::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!(
                    "deleting rows of {} would cascade into soft-delete table {}",
                    key.parent.display(),
                    table.display()
                ),
            )
            .detail(format!(
                "{orphans} rows of {} reference them through ON DELETE CASCADE; keeping them would leave orphans and deleting them would lose them.",
                table.display()
            ))
            .hint(format!(
                "Make {} a soft-delete table too (invariants.enable_soft_delete('{}')), purge the {} rows first, or change the foreign key to ON DELETE RESTRICT.",
                key.parent.display(),
                key.parent.display(),
                table.display()
            ))
            .table(&table.schema, &table.name));
        }
    }
    Ok(())
}

/// Soft-deletes, with the same timestamp, the rows that reference rows of
/// `relid` soft-deleted in this transaction through ON DELETE CASCADE, and
/// so on down (a self-referencing table until nothing changes).
fn cascade(relid: Oid) {
    if cascade_plan(relid).0.is_empty() || CASCADING.with(|c| c.replace(true)) {
        return;
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            CASCADING.with(|c| c.set(false));
        }
    }
    let _done = Done;
    let mut queue = vec![relid];
    while let Some(parent) = queue.pop() {
        let plan = cascade_plan(parent);
        for step in &plan.0 {
            let changed = as_table_owner(step.child, || spi(Spi::get_one::<i64>(&step.sql))).unwrap_or(0);
            if changed > 0 {
                queue.push(step.child);
            }
        }
    }
}
