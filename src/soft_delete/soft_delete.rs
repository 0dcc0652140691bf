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
//! Such deletes come from Postgres' foreign-key actions, which run in a
//! security context of their own; the row trigger checks then, as each
//! parent's owner, whether the parent row is gone.
use crate::table_config::TableConfig;
use pg_invariants_core::triggers;
use std::cell::RefCell;

use pgrx::pg_sys::{self, Datum, Oid, SubTransactionId};
use pgrx::prelude::*;

use super::{cascade_keys, soft_delete_column};
use crate::catalog::{first_row, quote_ident, self_and_descendants, spi, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::as_table_owner;
use crate::relcache;
use crate::tuple::{ColumnReader, Row};
use pgrx::datum::DatumWithOid;

pub const ROW_TRIGGER: &str = triggers::SOFT_DELETE_ROW.name;
pub const UPDATE_TRIGGER: &str = triggers::SOFT_DELETE_UPDATE.name;
pub const APPLY_TRIGGER: &str = triggers::SOFT_DELETE_APPLY.name;
pub const CASCADE_TRIGGER: &str = triggers::SOFT_DELETE_CASCADE.name;
pub const KEEP_TRIGGER: &str = triggers::SOFT_DELETE_KEEP.name;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.soft_delete_row() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_row';
CREATE FUNCTION invariants.soft_delete_update() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_update';
CREATE FUNCTION invariants.soft_delete_apply() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_apply';
CREATE FUNCTION invariants.soft_delete_cascade() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_cascade';
CREATE FUNCTION invariants.soft_delete_keep() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_keep';
"#,
    name = "soft_delete_triggers",
    requires = ["schema"]
);

crate::c_function!(soft_delete_row, pg_finfo_soft_delete_row, row_body);
crate::c_function!(soft_delete_update, pg_finfo_soft_delete_update, update_body);
crate::c_function!(soft_delete_apply, pg_finfo_soft_delete_apply, apply_body);
crate::c_function!(soft_delete_cascade, pg_finfo_soft_delete_cascade, cascade_body);
crate::c_function!(soft_delete_keep, pg_finfo_soft_delete_keep, keep_body);

/// `invariants.soft_delete_keep()`: BEFORE UPDATE FOR EACH ROW, fired only
/// for rows already soft-deleted (`WHEN (OLD.<column> IS NOT NULL)`). A
/// deleted row is deleted for every write: the UPDATE skips it (nothing
/// changes, the row is not counted), as it would find no row after a hard
/// delete. Let through: the extension's own work and foreign-key actions
/// (undelete, purge, restore, the cascade; they run without row-level
/// security forced, as Postgres runs foreign-key actions), and the table's
/// owner who sets `invariants.allow_undelete`.
fn keep_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let event = trigger.tg_event;
    if event & pg_sys::TRIGGER_EVENT_OPMASK != pg_sys::TRIGGER_EVENT_UPDATE
        || event & pg_sys::TRIGGER_EVENT_ROW == 0
        || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_BEFORE
    {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.soft_delete_keep() must run BEFORE UPDATE ... FOR EACH ROW",
        ));
    }
    // SAFETY: reads the backend's security context flags.
    let internal = unsafe { pg_sys::InNoForceRLSOperation() };
    if internal {
        return Ok(Datum::from(trigger.tg_newtuple));
    }
    if crate::guc::ALLOW_UNDELETE.get() {
        // SAFETY: the trigger manager passes an open relation.
        let relid = unsafe { (*trigger.tg_relation).rd_id };
        if let Some(table) = Table::lookup(relid) {
            crate::privilege::pinned(|| crate::guards::switch_allows("invariants.allow_undelete", &table))?;
            return Ok(Datum::from(trigger.tg_newtuple));
        }
    }
    // NULL: the row is skipped.
    Ok(Datum::from(0))
}

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
    // The row of a partition last passed to the BEFORE UPDATE trigger, in
    // this command: an UPDATE that moves it to another partition deletes it
    // from this one right after, and that delete is a move, not a delete.
    static MOVING: std::cell::Cell<Option<(Oid, pg_sys::ItemPointerData, pg_sys::CommandId)>> =
        const { std::cell::Cell::new(None) };
}

/// `invariants.soft_delete_update()`: BEFORE UPDATE FOR EACH ROW. Notes a
/// partition's row that may be moving to another partition.
fn update_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    // SAFETY: the trigger manager passes an open relation, the old row and
    // the new one.
    unsafe {
        let relation = trigger.tg_relation;
        if (*(*relation).rd_rel).relispartition {
            let command = pg_sys::GetCurrentCommandId(false);
            MOVING.with(|m| m.set(Some(((*relation).rd_id, (*trigger.tg_trigtuple).t_self, command))));
        }
        Ok(Datum::from(trigger.tg_newtuple))
    }
}

/// True when the row of `relid` at `ctid` is leaving its partition for
/// another in the UPDATE now running.
fn moving(relid: Oid, ctid: pg_sys::ItemPointerData) -> bool {
    // SAFETY: reads the current command id.
    let command = unsafe { pg_sys::GetCurrentCommandId(false) };
    MOVING.with(|m| {
        m.get().is_some_and(|(rel, at, cmd)| {
            rel == relid
                && cmd == command
                && at.ip_posid == ctid.ip_posid
                && at.ip_blkid.bi_hi == ctid.ip_blkid.bi_hi
                && at.ip_blkid.bi_lo == ctid.ip_blkid.bi_lo
        })
    })
}

pub fn forget_subxact(subxact: SubTransactionId) {
    PENDING.with(|p| p.borrow_mut().retain(|e| e.subxact < subxact));
}

pub fn forget_all() {
    PENDING.with(|p| p.borrow_mut().clear());
    PURGING.with(|p| p.borrow_mut().clear());
    MOVING.with(|m| m.set(None));
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
    PURGING.with(|p| p.borrow_mut().extend(self_and_descendants(table.oid)));
    f()
}

/// What the row trigger needs of a soft-delete relation, resolved once:
/// None when the relation is not a soft-delete table, Err when its declared
/// column is gone.
struct SoftDeleteTarget(Option<Result<Target, InvariantError>>);

struct Target {
    column: ColumnReader,
    /// The ON DELETE CASCADE keys by which a parent's delete reaches it.
    parents: Vec<CascadeParent>,
}

/// A parent whose hard delete cascades into the relation.
struct CascadeParent {
    parent: Table,
    /// The relation's key columns and their types.
    columns: Vec<(ColumnReader, Oid)>,
    /// True when the parent row with the key `$1, $2, ...` exists.
    exists_sql: String,
}

fn resolve_target(relid: Oid) -> SoftDeleteTarget {
    let Some(name) = soft_delete_column(relid) else {
        return SoftDeleteTarget(None);
    };
    let columns = crate::catalog::columns(relid);
    let reader = |name: &str| columns.iter().find(|c| c.name == name);
    let Some(column) = reader(&name).map(ColumnReader::new) else {
        let display = Table::lookup(relid).as_ref().map_or(String::new(), Table::display);
        return SoftDeleteTarget(Some(Err(InvariantError::new(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("soft-delete column \"{name}\" of table {display} no longer exists; DELETE refused"),
        )
        .detail("Deleting for real would lose the rows that soft delete is there to keep.")
        .hint(format!(
            "Enable soft delete again with the column's new name: SELECT invariants.enable_soft_delete('{display}', '<column>');"
        )))));
    };
    let parents = cascade_keys(relid, false)
        .into_iter()
        .filter_map(|key| {
            let columns = key
                .child_columns
                .iter()
                .map(|c| reader(c).map(|c| (ColumnReader::new(c), c.type_oid)))
                .collect::<Option<Vec<_>>>()?;
            let matches = key
                .parent_columns
                .iter()
                .zip(&key.equality)
                .enumerate()
                .map(|(i, (p, op))| format!("p.{} {op} ${}", quote_ident(p), i + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
            let only = if key.parent.partitioned { "" } else { "ONLY " };
            let exists_sql = format!(
                "SELECT EXISTS (SELECT FROM {only}{} p WHERE {matches})",
                key.parent.qualified()
            );
            Some(CascadeParent {
                parent: key.parent,
                columns,
                exists_sql,
            })
        })
        .collect();
    SoftDeleteTarget(Some(Ok(Target { column, parents })))
}

/// The first cascade parent of `row` that no longer exists, each read as
/// its owner.
fn missing_parent<'a>(target: &'a Target, row: &Row) -> Option<&'a Table> {
    target
        .parents
        .iter()
        .find(|p| {
            let key: Option<Vec<DatumWithOid>> = p
                .columns
                .iter()
                .map(|(reader, type_oid)| {
                    // SAFETY: a value of the column's own type, read from the
                    // row the trigger manager holds until the trigger returns.
                    reader
                        .datum(row)
                        .map(|datum| unsafe { DatumWithOid::new(datum, *type_oid) })
                })
                .collect();
            // A key with a NULL references nothing.
            key.is_some_and(|key| {
                as_table_owner(p.parent.oid, || crate::sql::one::<bool>(&p.exists_sql, &key)) != Some(true)
            })
        })
        .map(|p| &p.parent)
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
    // SAFETY: t_self is the address of the row being deleted.
    if purging(relid) || moving(relid, unsafe { (*tuple).t_self }) {
        return Ok(Datum::from(tuple));
    }
    let target = relcache::get_or_build(relid, || resolve_target(relid));
    let target = match &target.0 {
        // Not (or no longer) a soft-delete table: delete as usual.
        None => return Ok(Datum::from(tuple)),
        Some(Err(error)) => return Err(error.clone()),
        Some(Ok(target)) => target,
    };
    // Foreign-key actions run with row-level security off; so does the
    // extension's own work, which also restricts the context.
    // SAFETY: reads flags of the session state.
    if unsafe { pg_sys::InNoForceRLSOperation() } && !target.parents.is_empty() {
        // SAFETY: the old row of this relation, held by the trigger manager
        // until this returns.
        let row = unsafe { Row::in_slot(trigger.tg_trigslot, tuple) };
        if let Some(parent) = crate::privilege::pinned(|| missing_parent(target, &row)) {
            let table = Table::lookup(relid).unwrap_or_else(|| parent.clone());
            return Err(hard_cascade_error(parent, &table));
        }
    }
    // SAFETY: the old row of this relation, from the trigger manager.
    if unsafe { target.column.is_null_in(tuple, desc) } {
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
    crate::privilege::pinned(|| apply(relid));
    Ok(Datum::from(0))
}

/// Soft-deletes, as each table's owner, the rows the row trigger kept for
/// the statement on `relid` (and its partitions).
fn apply(relid: Oid) {
    let tree = self_and_descendants(relid);
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
        let sql = format!(
            "UPDATE ONLY {} SET {col} = pg_catalog.now() WHERE ctid OPERATOR(pg_catalog.=) ANY ($1) AND {col} IS NULL",
            table.qualified(),
            col = quote_ident(&column)
        );
        // Its AFTER UPDATE trigger soft-deletes the cascade children.
        as_table_owner(rel, || spi(Spi::run_with_args(&sql, &[ctids.into()])));
    }
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
    crate::privilege::pinned(|| cascade(relid));
    Ok(Datum::from(0))
}

/// One step of a cascade: a soft-delete child of a relation. The keys of
/// the parent rows soft-deleted now are read as the parent's owner, then
/// the child rows referencing them are soft-deleted as the child's owner,
/// the way Postgres' own ON DELETE CASCADE runs.
struct CascadeStep {
    parent: Oid,
    child: Oid,
    /// One array per key column of the parent rows soft-deleted now.
    parent_keys_sql: String,
    /// Soft-deletes the live children of the keys `$1, $2, ...`; returns how many.
    child_sql: String,
}

/// The cascade steps from one relation; empty when it is not a soft-delete
/// table that cascades, or has no soft-delete children. Cached per relation
/// (enabling or disabling soft delete invalidates the parents too).
struct CascadePlan(Vec<CascadeStep>);

fn cascade_plan(relid: Oid) -> std::rc::Rc<CascadePlan> {
    relcache::get_or_build(relid, || {
        let config = TableConfig::of(relid);
        let Some(parent_column) = config
            .soft_delete
            .as_ref()
            .filter(|s| s.cascade)
            .map(|s| s.column.clone())
        else {
            return CascadePlan(Vec::new());
        };
        let steps = cascade_keys(relid, true)
            .into_iter()
            .filter_map(|key| {
                let child_column = soft_delete_column(key.child.oid)?;
                let arrays = key
                    .parent_columns
                    .iter()
                    .map(|c| format!("pg_catalog.array_agg(p.{})", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let parent_keys_sql = format!(
                    "SELECT {arrays} FROM {} p WHERE p.{} OPERATOR(pg_catalog.=) pg_catalog.now()",
                    key.parent.qualified(),
                    quote_ident(&parent_column)
                );
                let names = (1..=key.parent_columns.len())
                    .map(|i| format!("k{i}"))
                    .collect::<Vec<_>>();
                let params = (1..=key.parent_columns.len())
                    .map(|i| format!("pg_catalog.unnest(${i})"))
                    .collect::<Vec<_>>();
                let matches = key
                    .child_columns
                    .iter()
                    .zip(&key.equality)
                    .zip(&names)
                    .map(|((c, op), k)| format!("k.{k} {op} c.{}", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let child_sql = format!(
                    "WITH done AS (
                         UPDATE {child} c SET {cc} = pg_catalog.now()
                           FROM ROWS FROM ({params}) AS k({names})
                          WHERE c.{cc} IS NULL AND {matches}
                      RETURNING 1)
                     SELECT pg_catalog.count(*) FROM done",
                    child = key.child.qualified(),
                    cc = quote_ident(&child_column),
                    params = params.join(", "),
                    names = names.join(", "),
                );
                Some(CascadeStep {
                    parent: key.parent.oid,
                    child: key.child.oid,
                    parent_keys_sql,
                    child_sql,
                })
            })
            .collect();
        CascadePlan(steps)
    })
}

/// The refusal of a hard delete of `parent` that cascades into `table`.
fn hard_cascade_error(parent: &Table, table: &Table) -> InvariantError {
    InvariantError::new(
        Code::ERRCODE_FOREIGN_KEY_VIOLATION,
        format!(
            "deleting rows of {} would cascade into soft-delete table {}",
            parent.display(),
            table.display()
        ),
    )
    .detail(format!(
        "Rows of {} reference them through ON DELETE CASCADE; keeping them would leave orphans and deleting them would lose them.",
        table.display()
    ))
    .hint(format!(
        "Make {} a soft-delete table too (invariants.enable_soft_delete('{}')), purge the {} rows first, or change the foreign key to ON DELETE RESTRICT.",
        parent.display(),
        parent.display(),
        table.display()
    ))
    .table(&table.schema, &table.name)
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
            let keys = as_table_owner(step.parent, || first_row(&step.parent_keys_sql, &[]));
            if keys.iter().any(|k| k.datum.is_none()) {
                continue; // no parent row soft-deleted now
            }
            let args: Vec<_> = keys.iter().map(|k| k.arg()).collect();
            let changed = as_table_owner(step.child, || {
                spi(Spi::get_one_with_args::<i64>(&step.child_sql, &args))
            });
            if changed.unwrap_or(0) > 0 {
                queue.push(step.child);
            }
        }
    }
}
