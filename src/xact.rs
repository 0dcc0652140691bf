//! Per-transaction state of the capabilities (the delete budget, rows
//! waiting to be soft-deleted) is dropped here when a subtransaction
//! aborts and when the transaction ends.
use pgrx::pg_sys::{self, SubTransactionId};

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    subxact: SubTransactionId,
    _parent: SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        crate::guards::delete_budget::forget_subxact(subxact);
        crate::soft_delete::soft_delete::forget_subxact(subxact);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        crate::guards::delete_budget::forget_all();
        crate::soft_delete::soft_delete::forget_all();
    }
}

/// Registers the callbacks; once per backend, from `_PG_init`.
pub fn register_callbacks() {
    // SAFETY: static functions that only touch thread-local state of this
    // crate; Postgres keeps the pointers for the backend's life.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}
