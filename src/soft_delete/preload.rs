//! Soft delete that clients see as a delete, when the library is in
//! `shared_preload_libraries`.
//!
//! A planner hook turns `DELETE FROM t WHERE ...` on a soft-delete table
//! into `UPDATE t SET deleted_at = now() WHERE ... AND deleted_at IS NULL`
//! before it is planned, wherever the DELETE comes from: a client, a CTE, a
//! view over the table (the rewriter has expanded it by then), a prepared
//! statement or PL/pgSQL. The planned statement keeps the command type
//! DELETE (its ModifyTable node does the UPDATE), which is what names the
//! command tag and SPI's result: clients see `DELETE n` with n the rows
//! soft-deleted, and RETURNING returns them as they are after the soft
//! delete. Rows already soft-deleted are not counted again. The DELETE
//! privilege (and DELETE policies) still decide who may do it.
//!
//! Left to the trigger path: deletes run by Postgres' foreign-key actions
//! (ON DELETE CASCADE of a table that is not a soft-delete table, refused
//! there), and `purge`, which really deletes.
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgList;

use super::soft_delete::purging;
use super::soft_delete_column;
use crate::relcache;

static mut INSTALLED: bool = false;

/// True when the hook is active in this backend (the library was preloaded).
pub fn active() -> bool {
    // SAFETY: written once, in _PG_init, before any query runs.
    unsafe { INSTALLED }
}

unsafe extern "C" {
    /// src/c/planner_hook.c: installs the hook, keeping the previous one.
    fn pgi_install_planner_hook();
}

/// Installs the hook when the library is being preloaded; loaded later, in
/// one session, it would change how DELETE behaves halfway through it.
///
/// The hook itself is C (src/c/planner_hook.c): it calls Postgres' planner
/// (or the previous hook) directly, so that the planner's errors reach the
/// client untouched, with every field; a Rust hook would have to call it
/// through pgrx's guard, which raises them again with fewer fields. Only
/// the rewrite, [`pgi_convert_soft_deletes`], is Rust.
pub fn install_if_preloading() {
    // SAFETY: _PG_init runs single-threaded, before any query.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        pgi_install_planner_hook();
        INSTALLED = true;
    }
}

/// Called by the C hook before the query is planned: rewrites the DELETEs
/// of soft-delete tables; true when the query itself was one (its planned
/// statement then keeps the DELETE command type).
///
/// # Safety
/// `parse` must be the rewritten query the planner was given.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgi_convert_soft_deletes(parse: *mut pg_sys::Query) -> bool {
    // SAFETY: per the contract.
    unsafe { convert_deletes(parse) }
}

/// What the rewrite needs of a soft-delete relation, cached per relation
/// (None for every other table, and for one whose column is gone: its
/// DELETE then reaches the trigger, which refuses it).
struct Target(Option<SoftDeleteTarget>);

struct SoftDeleteTarget {
    attnum: i16,
    column: String,
    /// Stored generated columns: all are recomputed by the rewritten UPDATE.
    generated: Vec<i16>,
}

fn target(relid: Oid) -> std::rc::Rc<Target> {
    relcache::get_or_build(relid, || {
        // A soft-delete table (or partition) carries the extension's
        // triggers: for any other, only the catalogs are read.
        let ours = crate::registry::any_on(&[relid])
            && crate::sql::one::<bool>(
                "SELECT pg_catalog.to_regclass('invariants.soft_delete_tables') IS NOT NULL",
                &[],
            ) == Some(true);
        let column = if ours { soft_delete_column(relid) } else { None };
        let generated = crate::sql::one::<Vec<i16>>(
            "SELECT coalesce(array_agg(attnum), '{}') FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attgenerated = 's' AND NOT attisdropped",
            &[relid.into()],
        )
        .unwrap_or_default();
        Target(column.and_then(|name| {
            crate::catalog::columns(relid)
                .into_iter()
                .find(|c| c.name == name)
                .map(|c| SoftDeleteTarget {
                    attnum: c.attnum,
                    column: c.name,
                    generated: generated.clone(),
                })
        }))
    })
}

/// Converts the DELETEs of `query` and of its WITH queries into soft
/// deletes, and keeps their UPDATEs from reaching soft-deleted rows; true
/// when `query` itself was a DELETE.
///
/// # Safety
/// `query` must be a valid, rewritten query tree.
unsafe fn convert_deletes(query: *mut pg_sys::Query) -> bool {
    // SAFETY: per the contract; lists hold the node types named.
    unsafe {
        let q = &mut *query;
        for cte in PgList::<pg_sys::CommonTableExpr>::from_pg(q.cteList).iter_ptr() {
            let inner = (*cte).ctequery;
            if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
                // A WITH query's own tag is never reported.
                convert_deletes(inner.cast());
            }
        }
        let delete = q.commandType == pg_sys::CmdType::CMD_DELETE;
        let update = q.commandType == pg_sys::CmdType::CMD_UPDATE;
        if !(delete || update) || q.resultRelation <= 0 {
            return false;
        }
        // Foreign-key actions, and the extension's own work (undelete,
        // purge, restore, the cascade), run with this flag: their deletes
        // stay real and their updates reach deleted rows. So do the updates
        // of an owner who set invariants.allow_undelete (the trigger checks
        // who set it).
        if pg_sys::InNoForceRLSOperation() || (update && crate::guc::ALLOW_UNDELETE.get()) {
            return false;
        }
        let Some(rte) = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).get_ptr(q.resultRelation as usize - 1)
        else {
            return false;
        };
        let relid = (*rte).relid;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || purging(relid) {
            return false;
        }
        let target = target(relid);
        let Some(target) = &target.0 else { return false };
        if update {
            // A deleted row is deleted for every write: UPDATE 0, as after
            // a hard delete.
            let jointree = &mut *q.jointree;
            jointree.quals = pg_sys::make_and_qual(jointree.quals, not_deleted(q.resultRelation, target.attnum).cast());
            return false;
        }
        soft_delete_instead(q, rte, target);
        true
    }
}

/// `<column> IS NULL` on the result relation.
///
/// # Safety
/// `relation` and `attnum` must name the soft-delete column of the query's
/// result relation.
unsafe fn not_deleted(relation: i32, attnum: i16) -> *mut pg_sys::NullTest {
    // SAFETY: builds planner nodes in the current memory context, as the
    // parser would.
    unsafe {
        let column = pg_sys::makeVar(relation, attnum, pg_sys::TIMESTAMPTZOID, -1, pg_sys::InvalidOid, 0);
        let is_null = pg_sys::palloc0(std::mem::size_of::<pg_sys::NullTest>()) as *mut pg_sys::NullTest;
        (*is_null).xpr.type_ = pg_sys::NodeTag::T_NullTest;
        (*is_null).arg = column.cast();
        (*is_null).nulltesttype = pg_sys::NullTestType::IS_NULL;
        (*is_null).location = -1;
        is_null
    }
}

/// Rewrites the DELETE `q` into `UPDATE ... SET <column> = now() WHERE ...
/// AND <column> IS NULL`.
///
/// # Safety
/// `q` must be a DELETE query tree whose result relation is `rte`.
unsafe fn soft_delete_instead(q: &mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry, target: &SoftDeleteTarget) {
    let (attnum, name) = (target.attnum, target.column.as_str());
    // SAFETY: builds planner nodes in the current memory context, as the
    // parser would for the same UPDATE.
    unsafe {
        let now = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_NOW),
            pg_sys::TIMESTAMPTZOID,
            std::ptr::null_mut(),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let column_name = pg_sys::pstrdup(std::ffi::CString::new(name).unwrap_or_default().as_ptr());
        let assignment = pg_sys::makeTargetEntry(now.cast(), attnum, column_name, false);
        q.targetList = pg_sys::lappend(q.targetList, assignment.cast());

        let jointree = &mut *q.jointree;
        jointree.quals = pg_sys::make_and_qual(jointree.quals, not_deleted(q.resultRelation, attnum).cast());

        // UPDATE OF <column> triggers see the column as updated, and stored
        // generated columns are recomputed (all of them: never too few);
        // permissions stay those of a DELETE.
        crate::compat::updated_columns::mark_updated(q, rte, attnum, &target.generated);
        q.commandType = pg_sys::CmdType::CMD_UPDATE;
    }
}
