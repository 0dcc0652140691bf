//! The one error path of the extension.
//!
//! Every error a user can cause is an [`InvariantError`]: a SQLSTATE, a
//! message, and where useful a DETAIL, a HINT and the schema, table, column
//! and constraint fields that a built-in CHECK constraint fills.
//!
//! SQL functions call [`InvariantError::raise`], which goes through pgrx's own
//! reporting (SQLSTATE, message, DETAIL and HINT). Trigger functions return
//! `Result<_, InvariantError>` and are entered through [`function_entry`],
//! which raises the error with every field set: pgrx cannot set the table and
//! constraint fields, so that last step calls Postgres' `errstart` ...
//! `errfinish` sequence itself, from a frame holding no Rust values.
use std::ffi::{c_char, c_int, CString};
use std::panic::AssertUnwindSafe;

mod coverage;
mod inner;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;

pub use inner::InnerErrors;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub use pgrx::PgSqlErrorCode as Code;

#[derive(Debug, Clone)]
pub struct InvariantError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub schema_name: Option<String>,
    pub table_name: Option<String>,
    pub column_name: Option<String>,
    pub constraint_name: Option<String>,
    /// Where in the source the error was made (see `coverage`).
    site: &'static std::panic::Location<'static>,
}

/// A rule declaration that cannot be a rule (parsed without a server).
impl From<pg_invariants_core::spec::SpecError> for InvariantError {
    fn from(error: pg_invariants_core::spec::SpecError) -> Self {
        let invalid = InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, error.message);
        match error.hint {
            Some(hint) => invalid.hint(hint),
            None => invalid,
        }
    }
}

impl InvariantError {
    #[track_caller]
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        InvariantError {
            site: std::panic::Location::caller(),
            code,
            message: message.into(),
            detail: None,
            hint: None,
            schema_name: None,
            table_name: None,
            column_name: None,
            constraint_name: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn table(mut self, schema: &str, table: &str) -> Self {
        self.schema_name = Some(schema.to_string());
        self.table_name = Some(table.to_string());
        self
    }

    pub fn column(mut self, column: &str) -> Self {
        self.column_name = Some(column.to_string());
        self
    }

    pub fn constraint(mut self, name: &str) -> Self {
        self.constraint_name = Some(name.to_string());
        self
    }

    /// Raises the error from a SQL function (anything called through pgrx).
    /// The table, column and constraint fields are not carried on this path;
    /// triggers, where they matter, go through [`function_entry`].
    pub fn raise(self) -> ! {
        coverage::record(self.site);
        let mut report = ErrorReport::new(self.code, self.message, "pg_invariants");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report returned")
    }
}

/// Shorthand for `InvariantError::new(..).raise()`.
#[track_caller]
pub fn fail(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    // untestable: fail's own body: each call of fail is the site
    InvariantError::new(code, message).raise()
}

/// An error whose text has been copied into memory Postgres owns, so raising
/// it needs no Rust value alive.
#[derive(Clone, Copy)]
struct PreparedError {
    code: c_int,
    message: *const c_char,
    detail: *const c_char,
    hint: *const c_char,
    schema_name: *const c_char,
    table_name: *const c_char,
    column_name: *const c_char,
    constraint_name: *const c_char,
}

#[derive(Clone, Copy)]
enum Outcome {
    Done(pg_sys::Datum),
    Failed(PreparedError),
}

fn palloc_cstr(text: Option<&str>) -> *const c_char {
    match text {
        None => std::ptr::null(),
        Some(text) => {
            // Interior NULs cannot reach Postgres; drop them rather than fail.
            let c = CString::new(text.replace('\0', "")).unwrap_or_default();
            // SAFETY: pstrdup copies the NUL-terminated string into the
            // current memory context, which error recovery resets.
            unsafe { pg_sys::pstrdup(c.as_ptr()) }
        }
    }
}

impl InvariantError {
    fn prepare(&self) -> PreparedError {
        coverage::record(self.site);
        PreparedError {
            code: self.code as c_int,
            message: palloc_cstr(Some(&self.message)),
            detail: palloc_cstr(self.detail.as_deref()),
            hint: palloc_cstr(self.hint.as_deref()),
            schema_name: palloc_cstr(self.schema_name.as_deref()),
            table_name: palloc_cstr(self.table_name.as_deref()),
            column_name: palloc_cstr(self.column_name.as_deref()),
            constraint_name: palloc_cstr(self.constraint_name.as_deref()),
        }
    }
}

/// Enters a function body from Postgres. Panics and Postgres errors inside
/// `body` are handled by pgrx as everywhere else (with every field of a
/// Postgres error kept, see [`InvariantError`]'s `inner` module); an `Err`
/// returned by `body` is raised with every field of the [`InvariantError`]
/// set.
///
/// # Safety
/// Call only as the whole body of an `extern "C"` function that Postgres
/// calls with `fcinfo`, holding no value with a destructor: raising an ERROR
/// longjmps out of this frame and that caller's frame.
pub unsafe fn function_entry(
    fcinfo: pg_sys::FunctionCallInfo,
    body: fn(pg_sys::FunctionCallInfo) -> Result<pg_sys::Datum, InvariantError>,
) -> pg_sys::Datum {
    // SAFETY: the closure runs inside pgrx's guard, which turns panics and
    // Postgres errors into Postgres errors; it returns only `Copy` data.
    let outcome = unsafe {
        pgrx::pgrx_extern_c_guard(AssertUnwindSafe(|| {
            let _inner = InnerErrors::enter();
            match body(fcinfo) {
                Ok(datum) => Outcome::Done(datum),
                Err(error) => Outcome::Failed(error.prepare()),
            }
        }))
    };
    match outcome {
        Outcome::Done(datum) => datum,
        // SAFETY: every string lives in Postgres memory, and this frame and
        // the caller's hold nothing with a destructor.
        Outcome::Failed(prepared) => unsafe { throw(prepared) },
    }
}

/// Runs `body` from a callback Postgres calls (a transaction callback, say),
/// raising its error with every field set, as [`function_entry`] does.
///
/// # Safety
/// Call only as the whole body of an `extern "C"` function Postgres calls,
/// holding no value with a destructor.
pub unsafe fn callback_entry(body: fn() -> Result<(), InvariantError>) {
    // SAFETY: as in function_entry: only `Copy` data leaves the guard.
    let outcome = unsafe {
        pgrx::pgrx_extern_c_guard(AssertUnwindSafe(|| {
            let _inner = InnerErrors::enter();
            match body() {
                Ok(()) => Outcome::Done(pg_sys::Datum::from(0)),
                Err(error) => Outcome::Failed(error.prepare()),
            }
        }))
    };
    if let Outcome::Failed(prepared) = outcome {
        // SAFETY: every string lives in Postgres memory, and this frame and
        // the caller's hold nothing with a destructor.
        unsafe { throw(prepared) }
    }
}

// Declared here, unguarded, because an ERROR must longjmp straight to the
// executor's handler: pgrx's guarded bindings would catch it and drop the
// table and constraint fields. These functions do not unwind.
unsafe extern "C" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg_internal(fmt: *const c_char, ...) -> c_int;
    fn errdetail_internal(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn err_generic_string(field: c_int, str_: *const c_char) -> c_int;
}

/// Raises `error` as an ERROR with every field set; never returns.
///
/// # Safety
/// No frame between here and the Postgres caller may hold a value with a
/// destructor: `errfinish` longjmps over them.
unsafe fn throw(error: PreparedError) -> ! {
    const PERCENT_S: *const c_char = c"%s".as_ptr();
    unsafe {
        if errstart(pg_sys::PGERROR as c_int, std::ptr::null()) {
            errcode(error.code);
            errmsg_internal(PERCENT_S, error.message);
            if !error.detail.is_null() {
                errdetail_internal(PERCENT_S, error.detail);
            }
            if !error.hint.is_null() {
                errhint(PERCENT_S, error.hint);
            }
            let fields = [
                (pg_sys::PG_DIAG_SCHEMA_NAME, error.schema_name),
                (pg_sys::PG_DIAG_TABLE_NAME, error.table_name),
                (pg_sys::PG_DIAG_COLUMN_NAME, error.column_name),
                (pg_sys::PG_DIAG_CONSTRAINT_NAME, error.constraint_name),
            ];
            for (field, value) in fields {
                if !value.is_null() {
                    err_generic_string(field as c_int, value);
                }
            }
        }
        errfinish(c"errors.rs".as_ptr(), line!() as c_int, c"pg_invariants".as_ptr());
        // errfinish never returns for an ERROR.
        std::process::abort()
    }
}

/// The trigger data Postgres passed, or an error if called another way.
///
/// # Safety
/// `fcinfo` must be the call info Postgres passed to a C function.
pub unsafe fn trigger_data<'a>(fcinfo: pg_sys::FunctionCallInfo) -> Result<&'a pg_sys::TriggerData, InvariantError> {
    // SAFETY: fcinfo is valid per the contract; context is either NULL or a
    // node, and a TriggerData node when called by the trigger manager.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            // untestable: Postgres refuses to call a trigger function other than as a trigger
            return Err(InvariantError::new(
                Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "this function can only be called as a trigger",
            ));
        }
        Ok(&*(context as *const pg_sys::TriggerData))
    }
}

/// Defines a C-callable function `$name` (with its `pg_finfo_` record)
/// whose body is `$body`, entered through [`function_entry`]: every trigger
/// function of the extension, and the SQL functions whose errors carry the
/// table and constraint fields.
#[macro_export]
macro_rules! c_function {
    ($name:ident, $finfo:ident, $body:path) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[no_mangle]
        #[doc(hidden)]
        // Called by Postgres only, with its own fcinfo: not a Rust API.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn $name(fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum {
            // SAFETY: Postgres calls this with its own fcinfo, and this frame
            // holds nothing with a destructor.
            unsafe { $crate::errors::function_entry(fcinfo, $body) }
        }
    };
}
