//! Row images for the audit log: the jsonb value `to_jsonb(row)` returns,
//! built here with each column's conversion resolved once per capture.
//! `to_jsonb` looks up every value's type category and output function
//! again, and turns integers and numerics to text and back; for a large
//! DELETE that was the biggest part of the capture's cost.
//!
//! Only tables whose columns all convert to a jsonb scalar are handled:
//! booleans, numbers, dates and timestamps, and any type that becomes its
//! text form (a type with its own cast to json included: the cast is not
//! called, so restore reads the value back). Arrays, composites, json and
//! jsonb keep going through `to_jsonb`.
use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum, Oid};

use crate::catalog::columns;
use crate::errors::{Code, InvariantError};

/// The longest string a jsonb value can hold (JENTRY_OFFLENMASK).
const JSONB_MAX_STRING: usize = 0x0FFF_FFFF;

/// How one column's value becomes a jsonb scalar, as `to_jsonb` does it.
enum Conversion {
    Bool,
    /// Integers become numerics directly: the same value `to_jsonb` gets
    /// from their text form.
    Int2,
    Int4,
    Int8,
    /// A number unless NaN or an infinity, which become their text form.
    Numeric {
        output: Oid,
    },
    /// Through the text form: a number unless it holds an N (NaN, Infinity).
    Float {
        output: Oid,
    },
    /// ISO 8601, as JSON encodes dates and timestamps.
    DateTime {
        type_oid: Oid,
    },
    /// text and varchar: their bytes.
    Text,
    /// Any other type: its text form.
    Output {
        output: Oid,
    },
}

struct ImageColumn {
    key: CString,
    conversion: Conversion,
}

pub struct RowImage {
    columns: Vec<ImageColumn>,
}

impl RowImage {
    /// The image builder for `relid`'s rows, or None when a column needs
    /// `to_jsonb` itself.
    pub fn for_table(relid: Oid) -> Option<RowImage> {
        let columns = columns(relid)
            .into_iter()
            .map(|column| {
                Some(ImageColumn {
                    key: CString::new(column.name).ok()?,
                    conversion: conversion_for(column.type_oid)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RowImage { columns })
    }

    /// How many values `build` takes: one per column, in the table's order.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The jsonb image of one row, allocated in the current memory context
    /// (as is everything built on the way).
    ///
    /// # Safety
    /// `values` and `nulls` hold one row of the table, `width()` entries each,
    /// in column order.
    pub unsafe fn build(&self, values: &[Datum], nulls: &[bool]) -> Result<Datum, InvariantError> {
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        // SAFETY: per the contract; every JsonbValue pushed points at data
        // (keys owned by self, values in the current context) that outlives
        // JsonbValueToJsonb, which copies it all into the result.
        unsafe {
            pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
                std::ptr::null_mut(),
            );
            for (i, column) in self.columns.iter().enumerate() {
                let mut key = string_value(column.key.as_ptr() as *mut _, column.key.as_bytes().len());
                pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut key);
                let mut value = match (values.get(i), nulls.get(i)) {
                    (Some(value), Some(false)) => convert(&column.conversion, *value)?,
                    _ => null_value(),
                };
                pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_VALUE, &mut value);
            }
            let object = pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
                std::ptr::null_mut(),
            );
            Ok(Datum::from(pg_sys::JsonbValueToJsonb(object)))
        }
    }
}

/// Mirrors `jsonb_categorize_type`; None for the categories left to it.
fn conversion_for(type_oid: Oid) -> Option<Conversion> {
    // SAFETY: catalog lookups of an existing type, into locals.
    unsafe {
        let base = pg_sys::getBaseType(type_oid);
        let output = || {
            let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(base, &mut output, &mut varlena);
            output
        };
        Some(match base {
            pg_sys::BOOLOID => Conversion::Bool,
            pg_sys::INT2OID => Conversion::Int2,
            pg_sys::INT4OID => Conversion::Int4,
            pg_sys::INT8OID => Conversion::Int8,
            pg_sys::NUMERICOID => Conversion::Numeric { output: output() },
            pg_sys::FLOAT4OID | pg_sys::FLOAT8OID => Conversion::Float { output: output() },
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => Conversion::DateTime { type_oid: base },
            pg_sys::JSONOID | pg_sys::JSONBOID => return None,
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Conversion::Text,
            _ => {
                let is_array = pg_sys::get_element_type(base) != pg_sys::InvalidOid
                    || base == pg_sys::ANYARRAYOID
                    || base == pg_sys::ANYCOMPATIBLEARRAYOID
                    || base == pg_sys::RECORDARRAYOID;
                if is_array || pg_sys::type_is_rowtype(base) {
                    return None;
                }
                // A type's own cast to json is never called: its text form
                // is what restore reads back.
                Conversion::Output { output: output() }
            }
        })
    }
}

/// # Safety
/// `value` must be a non-null value of the type `conversion` was made for.
unsafe fn convert(conversion: &Conversion, value: Datum) -> Result<pg_sys::JsonbValue, InvariantError> {
    // SAFETY: per the contract; conversions allocate in the current context.
    unsafe {
        Ok(match conversion {
            Conversion::Bool => pg_sys::JsonbValue {
                type_: pg_sys::jbvType::jbvBool,
                val: pg_sys::JsonbValue__bindgen_ty_1 {
                    boolean: value.value() != 0,
                },
            },
            Conversion::Int2 => numeric_value(pg_sys::int64_to_numeric(i64::from(value.value() as i16))),
            Conversion::Int4 => numeric_value(pg_sys::int64_to_numeric(i64::from(value.value() as i32))),
            Conversion::Int8 => numeric_value(pg_sys::int64_to_numeric(value.value() as i64)),
            Conversion::Numeric { output } => {
                let numeric = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as pg_sys::Numeric;
                if pg_sys::numeric_is_nan(numeric) || pg_sys::numeric_is_inf(numeric) {
                    text_value(pg_sys::OidOutputFunctionCall(*output, value))?
                } else {
                    numeric_value(numeric)
                }
            }
            Conversion::Float { output } => {
                let text = pg_sys::OidOutputFunctionCall(*output, value);
                if CStr::from_ptr(text).to_bytes().iter().any(|b| *b == b'N' || *b == b'n') {
                    text_value(text)?
                } else {
                    let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
                    pg_sys::getTypeInputInfo(pg_sys::NUMERICOID, &mut input, &mut ioparam);
                    numeric_value(pg_sys::OidInputFunctionCall(input, text, ioparam, -1).cast_mut_ptr())
                }
            }
            Conversion::DateTime { type_oid } => text_value(pg_sys::JsonEncodeDateTime(
                std::ptr::null_mut(),
                value,
                *type_oid,
                std::ptr::null(),
            ))?,
            Conversion::Text => {
                let text = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                let len = pgrx::varlena::varsize_any_exhdr(text);
                checked_string(pgrx::varlena::vardata_any(text) as *mut _, len)?
            }
            Conversion::Output { output } => text_value(pg_sys::OidOutputFunctionCall(*output, value))?,
        })
    }
}

fn null_value() -> pg_sys::JsonbValue {
    pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvNull,
        val: pg_sys::JsonbValue__bindgen_ty_1 { boolean: false },
    }
}

fn numeric_value(numeric: pg_sys::Numeric) -> pg_sys::JsonbValue {
    pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvNumeric,
        val: pg_sys::JsonbValue__bindgen_ty_1 { numeric },
    }
}

fn string_value(data: *mut std::ffi::c_char, len: usize) -> pg_sys::JsonbValue {
    pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvString,
        val: pg_sys::JsonbValue__bindgen_ty_1 {
            string: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
                len: len as i32,
                val: data,
            },
        },
    }
}

/// # Safety
/// `text` must be a NUL-terminated string that outlives the image.
unsafe fn text_value(text: *mut std::ffi::c_char) -> Result<pg_sys::JsonbValue, InvariantError> {
    // SAFETY: per the contract.
    let len = unsafe { CStr::from_ptr(text) }.to_bytes().len();
    checked_string(text, len)
}

fn checked_string(data: *mut std::ffi::c_char, len: usize) -> Result<pg_sys::JsonbValue, InvariantError> {
    if len > JSONB_MAX_STRING {
        return Err(InvariantError::new(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "string too long to represent as jsonb string",
        )
        .detail(format!(
            "Due to an implementation restriction, jsonb strings cannot exceed {JSONB_MAX_STRING} bytes."
        )));
    }
    Ok(string_value(data, len))
}
