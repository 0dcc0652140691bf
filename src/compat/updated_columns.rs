//! The columns an UPDATE writes, as the executor reads them: for `UPDATE OF`
//! triggers and for recomputing stored generated columns.
//!
//! PostgreSQL 16 moved `updatedCols` from the range table entry to its
//! `RTEPermissionInfo` ("Rework query relation permission checking",
//! commit a61b1f74) and dropped `extraUpdatedCols`: the executor now works
//! out which generated columns an UPDATE recomputes from the columns it
//! writes.
use pgrx::pg_sys;

/// Marks column `attnum` of the query's result relation `rte` as written,
/// and, before 16, the stored generated columns `generated` as recomputed.
///
/// # Safety
/// `q` must be the query whose result relation is `rte`, being rewritten
/// into an UPDATE before it is planned.
pub unsafe fn mark_updated(q: &mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry, attnum: i16, generated: &[i16]) {
    let member = |attnum: i16| attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber;
    // SAFETY: per the contract; the sets are made in the current memory
    // context, as the parser makes them.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            let _ = q;
            (*rte).updatedCols = pg_sys::bms_add_member((*rte).updatedCols, member(attnum));
            for column in generated {
                (*rte).extraUpdatedCols = pg_sys::bms_add_member((*rte).extraUpdatedCols, member(*column));
            }
        }
        #[cfg(not(feature = "pg15"))]
        {
            let _ = generated;
            let permissions = pg_sys::getRTEPermissionInfo(q.rteperminfos, rte);
            (*permissions).updatedCols = pg_sys::bms_add_member((*permissions).updatedCols, member(attnum));
        }
    }
}
