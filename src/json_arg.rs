//! A jsonb argument of an SQL function, read without a panic. pgrx's
//! `JsonB` parses with serde_json, whose nesting limit (128 levels) would
//! end in an internal error; here a value serde_json cannot read becomes
//! the caller's error, with a SQLSTATE.
use std::ffi::CStr;

use pgrx::pg_sys::{self, Oid};
use pgrx::FromDatum;

use crate::errors::{Code, InvariantError};

pub struct JsonArg(Result<serde_json::Value, String>);

impl JsonArg {
    /// The value, or the `invalid_parameter_value` error of argument `arg`.
    pub fn value(self, arg: &str) -> Result<serde_json::Value, InvariantError> {
        self.0.map_err(|e| {
            InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("argument {arg}: {e}"))
                .hint("Rules and repairs are small JSON objects: nested at most 128 levels deep.")
        })
    }
}

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb argument; jsonb_out writes its text into
        // the current memory context.
        let text = unsafe {
            let text = pg_sys::OidOutputFunctionCall(Oid::from(pg_sys::F_JSONB_OUT), datum);
            CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        Some(JsonArg(serde_json::from_str(&text).map_err(|e| e.to_string())))
    }
}

pgrx::impl_sql_translatable!(JsonArg, "jsonb");

// SAFETY: a jsonb argument is a varlena passed by reference, which
// from_datum reads.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null jsonb argument.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(JsonArg(Ok(serde_json::Value::Null)))
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above; NULL becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}
