//! Errors of the statements the extension runs keep every field.
//!
//! pgrx turns a Postgres error raised under a Rust frame into a panic and
//! raises it again at the function's entry with its SQLSTATE, message,
//! DETAIL and HINT only: the schema, table, column, datatype and constraint
//! names, the CONTEXT and the internal query are lost. So each entry of the
//! extension (SQL function, trigger, callback) links an error context
//! callback, [`note_error`], which Postgres calls while such an error is
//! still being raised (inside `errfinish`) and which keeps a full copy.
//! When the entry unwinds because of it, a second callback,
//! [`restore_fields`], is linked for the error pgrx raises again: it adds
//! back what pgrx dropped. Only the outermost entry on the stack does this.
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};

use pgrx::pg_sys;

thread_local! {
    // The full copy of the last error raised under an entry, in
    // TopMemoryContext.
    static NOTED: Cell<*mut pg_sys::ErrorData> = const { Cell::new(std::ptr::null_mut()) };
    // Entries on the stack.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    // The callback that adds the fields back, allocated once.
    static RESTORE: Cell<*mut pg_sys::ErrorContextCallback> = const { Cell::new(std::ptr::null_mut()) };
}

// Declared here, unguarded: they run inside `errfinish`, where pgrx's
// guarded bindings must not catch anything. None of them raises an ERROR
// short of running out of memory.
unsafe extern "C" {
    fn CopyErrorData() -> *mut pg_sys::ErrorData;
    fn FreeErrorData(edata: *mut pg_sys::ErrorData);
    fn geterrcode() -> c_int;
    fn err_generic_string(field: c_int, str_: *const c_char) -> c_int;
    fn errcontext_msg(fmt: *const c_char, ...) -> c_int;
    fn errdetail_log(fmt: *const c_char, ...) -> c_int;
    fn errposition(cursorpos: c_int) -> c_int;
    fn internalerrposition(cursorpos: c_int) -> c_int;
    fn internalerrquery(query: *const c_char) -> c_int;
}

/// A copy of the error being raised, in TopMemoryContext.
///
/// # Safety
/// Only inside `errfinish`'s context callbacks.
unsafe fn copy_current() -> *mut pg_sys::ErrorData {
    // SAFETY: CopyErrorData copies the error on top of the stack into the
    // current context, which must not be ErrorContext (MemoryContextSwitchTo
    // is inline in Postgres: the switch is the assignment).
    unsafe {
        let old = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = pg_sys::TopMemoryContext;
        let copy = CopyErrorData();
        pg_sys::CurrentMemoryContext = old;
        copy
    }
}

fn forget_noted() {
    let noted = NOTED.with(|n| n.replace(std::ptr::null_mut()));
    if !noted.is_null() {
        // SAFETY: a copy made by copy_current, used by nothing else.
        unsafe { FreeErrorData(noted) };
    }
}

/// Same SQLSTATE and message.
///
/// # Safety
/// Both must be valid error copies.
unsafe fn same_error(a: *const pg_sys::ErrorData, b: *const pg_sys::ErrorData) -> bool {
    // SAFETY: per the contract.
    unsafe {
        let text = |e: *const pg_sys::ErrorData| (!(*e).message.is_null()).then(|| CStr::from_ptr((*e).message));
        (*a).sqlerrcode == (*b).sqlerrcode && text(a) == text(b)
    }
}

/// True for the SQLSTATE classes of notices and warnings (00, 01, 02).
fn is_notice(sqlstate: c_int) -> bool {
    // A SQLSTATE packs its five characters six bits each, the first lowest.
    let first = sqlstate & 0x3F;
    let second = (sqlstate >> 6) & 0x3F;
    // '0' is stored as 0 ('0' - '0').
    first == 0 && second <= 2
}

/// Called by Postgres for every message raised under an entry: keeps a
/// copy of each error (the first one, when the same error is raised again
/// on its way out). "C-unwind" as Postgres' callback type is: an error in
/// here (out of memory) longjmps over a frame holding nothing to drop.
unsafe extern "C-unwind" fn note_error(_arg: *mut c_void) {
    // SAFETY: Postgres calls this from errfinish, with the error on top of
    // its stack.
    unsafe {
        if is_notice(geterrcode()) {
            return;
        }
        let copy = copy_current();
        let noted = NOTED.with(Cell::get);
        if !noted.is_null() && same_error(noted, copy) {
            FreeErrorData(copy);
            return;
        }
        forget_noted();
        NOTED.with(|n| n.set(copy));
    }
}

/// Called by Postgres while pgrx raises an error again: when it is the one
/// noted, adds back every field pgrx did not carry.
unsafe extern "C-unwind" fn restore_fields(_arg: *mut c_void) {
    let noted = NOTED.with(|n| n.replace(std::ptr::null_mut()));
    if noted.is_null() {
        return;
    }
    // SAFETY: Postgres calls this from errfinish, with the error on top of
    // its stack; `noted` is a full copy of the original.
    unsafe {
        let current = copy_current();
        if same_error(noted, current) {
            let n = &*noted;
            let c = &*current;
            let fields = [
                (pg_sys::PG_DIAG_SCHEMA_NAME, n.schema_name, c.schema_name),
                (pg_sys::PG_DIAG_TABLE_NAME, n.table_name, c.table_name),
                (pg_sys::PG_DIAG_COLUMN_NAME, n.column_name, c.column_name),
                (pg_sys::PG_DIAG_DATATYPE_NAME, n.datatype_name, c.datatype_name),
                (pg_sys::PG_DIAG_CONSTRAINT_NAME, n.constraint_name, c.constraint_name),
            ];
            for (field, original, already) in fields {
                if !original.is_null() && already.is_null() {
                    err_generic_string(field as c_int, original);
                }
            }
            // Only the lines of the frames below the entry: the ones above
            // add theirs again, after this.
            if !n.context.is_null() && c.context.is_null() {
                errcontext_msg(c"%s".as_ptr(), n.context);
            }
            if !n.detail_log.is_null() && c.detail_log.is_null() {
                errdetail_log(c"%s".as_ptr(), n.detail_log);
            }
            if !n.internalquery.is_null() && c.internalquery.is_null() {
                internalerrquery(n.internalquery);
                internalerrposition(n.internalpos);
            }
            if n.cursorpos > 0 && c.cursorpos == 0 {
                errposition(n.cursorpos);
            }
        }
        FreeErrorData(current);
        FreeErrorData(noted);
    }
}

/// The callback [`restore_fields`], allocated once for the backend.
fn restore_callback() -> *mut pg_sys::ErrorContextCallback {
    let existing = RESTORE.with(Cell::get);
    if !existing.is_null() {
        return existing;
    }
    // SAFETY: allocated zeroed in TopMemoryContext, which lives as long as
    // the backend; only this module links it.
    let callback = unsafe {
        pg_sys::MemoryContextAllocZero(
            pg_sys::TopMemoryContext,
            std::mem::size_of::<pg_sys::ErrorContextCallback>(),
        ) as *mut pg_sys::ErrorContextCallback
    };
    RESTORE.with(|r| r.set(callback));
    callback
}

/// Notes the errors raised while it lives (when it is the outermost one).
pub struct InnerErrors {
    callback: Option<Box<pg_sys::ErrorContextCallback>>,
}

impl InnerErrors {
    pub fn enter() -> InnerErrors {
        let depth = DEPTH.with(|d| d.replace(d.get() + 1));
        if depth > 0 {
            return InnerErrors { callback: None };
        }
        forget_noted();
        // Allocated now: nothing may fail while an error unwinds.
        restore_callback();
        let mut callback = Box::new(pg_sys::ErrorContextCallback {
            // SAFETY: reading the current head of Postgres' callback stack.
            previous: unsafe { pg_sys::error_context_stack },
            callback: Some(note_error),
            arg: std::ptr::null_mut(),
        });
        // SAFETY: the callback is boxed (its address does not move) and is
        // unlinked in drop, on every path.
        unsafe { pg_sys::error_context_stack = callback.as_mut() };
        InnerErrors {
            callback: Some(callback),
        }
    }
}

impl Drop for InnerErrors {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        let Some(callback) = self.callback.take() else { return };
        // SAFETY: unlinks this entry's callback, as Postgres' own callers
        // do; then, while an error noted under it unwinds to be raised
        // again, links the callback that adds its fields back. Postgres
        // resets the callback stack when it catches that error.
        unsafe {
            pg_sys::error_context_stack = callback.previous;
            let noted = NOTED.with(Cell::get);
            if std::thread::panicking() && !noted.is_null() {
                let restore = restore_callback();
                (*restore).previous = pg_sys::error_context_stack;
                (*restore).callback = Some(restore_fields);
                (*restore).arg = std::ptr::null_mut();
                pg_sys::error_context_stack = restore;
            } else {
                forget_noted();
            }
        }
    }
}
