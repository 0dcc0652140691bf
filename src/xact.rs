//! Per-transaction state of the capabilities (the delete budget, rows
//! waiting to be soft-deleted, parents waiting for their count check) is
//! dropped here when a subtransaction aborts and when the transaction ends;
//! count checks run here as the transaction commits.
use std::cell::Cell;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::{self, SubTransactionId};

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    subxact: SubTransactionId,
    _parent: SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        crate::guards::budget::forget_subxact(subxact);
        crate::soft_delete::soft_delete::forget_subxact(subxact);
        crate::rules::require_count::forget_subxact(subxact);
    }
}

/// Checks the parents the transaction touched as it commits; drops every
/// capability's per-transaction state when it ends.
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    let body: fn() -> Result<(), crate::errors::InvariantError> = match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT | pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            // Most transactions touch no counted parent: nothing to enter.
            if !crate::rules::require_count::anything_touched() {
                return;
            }
            crate::rules::require_count::check_touched
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => forget_all,
        _ => return,
    };
    // SAFETY: this frame holds nothing with a destructor.
    unsafe { crate::errors::callback_entry(body) };
}

fn forget_all() -> Result<(), crate::errors::InvariantError> {
    crate::guards::budget::forget_all();
    crate::soft_delete::soft_delete::forget_all();
    crate::rules::require_count::forget_all();
    Ok(())
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

/// Runs `f` in a subtransaction of its own, as a PL/pgSQL exception block
/// does: an ERROR inside rolls back what `f` did and comes back as `Err`
/// with its message, and the caller carries on.
pub fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    try_in_subtransaction(f).map_err(|error| match error {
        CaughtError::PostgresError(report)
        | CaughtError::ErrorReport(report)
        | CaughtError::RustPanic { ereport: report, .. } => report.message().to_string(),
    })
}

/// The SQLSTATE of a caught error.
pub fn sqlstate_of(error: &CaughtError) -> pgrx::PgSqlErrorCode {
    match error {
        CaughtError::PostgresError(report)
        | CaughtError::ErrorReport(report)
        | CaughtError::RustPanic { ereport: report, .. } => report.sql_error_code(),
    }
}

/// [`in_subtransaction`], giving back the error itself (to look at its
/// SQLSTATE, or raise it again with `rethrow`).
pub fn try_in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, CaughtError> {
    // SAFETY: the memory context and resource owner current here are put
    // back on both paths, as PL/pgSQL does around BeginInternalSubTransaction.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    // SAFETY: starts a subtransaction, ended on both paths below.
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    restore();
    pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        let result = f();
        // SAFETY: ends the subtransaction begun above, keeping its work.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Ok(result)
    }))
    .catch_others(|error| {
        restore();
        // SAFETY: undoes the subtransaction begun above, and its error.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(error)
    })
    .execute()
}

thread_local! {
    // Set while the extension itself updates rows it logs in its own way
    // (a repair, a soft delete, a restore): those UPDATEs are not captured
    // again, nor counted against an update budget.
    static OWN_UPDATE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, whose UPDATEs the extension logs itself.
pub fn own_update<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OWN_UPDATE.with(|o| o.set(self.0));
        }
    }
    let _reset = Reset(OWN_UPDATE.with(|o| o.replace(true)));
    f()
}

/// True while the extension runs UPDATEs it logs itself.
pub fn in_own_update() -> bool {
    OWN_UPDATE.with(Cell::get)
}
