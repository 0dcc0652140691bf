//! Row images for the audit log: each column's value as `to_jsonb` writes
//! it, with each column's conversion resolved once per capture, pushed as
//! one jsonb array per row (the column names are kept once, in the
//! capture). Integers, numerics, floats, booleans, dates and timestamps and
//! text are converted here directly; `to_jsonb` itself was the biggest part
//! of a large capture's cost. Arrays, composites, ranges, json and jsonb go
//! through `to_jsonb`'s own function, one value at a time. A type with its
//! own cast to json is written in its text form (the cast is never called),
//! which restore reads back.
//!
//! A few values jsonb cannot carry exactly: a float's -0, an array whose
//! lower bound is not 1, json's own text (its spacing, key order and
//! duplicate keys), and what holds them. Their text form (written under
//! fixed settings) goes beside the image, and restore uses it.
use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::PgList;

use crate::catalog::columns;
use crate::errors::{Code, InvariantError};

/// The longest string a jsonb value can hold (JENTRY_OFFLENMASK).
const JSONB_MAX_STRING: usize = 0x0FFF_FFFF;

/// How one column's value becomes a jsonb value, as `to_jsonb` does it.
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
    /// A number unless NaN or an infinity; -0 is kept beside.
    Float4,
    Float8,
    /// ISO 8601, as JSON encodes dates and timestamps.
    DateTime {
        type_oid: Oid,
    },
    /// text and varchar: their bytes.
    Text,
    /// `to_jsonb`'s own conversion (arrays, composites, ranges, json, jsonb).
    ToJsonb {
        function: Box<pg_sys::FmgrInfo>,
        /// When its text form goes beside the image: always (json, or what
        /// holds json or floats), or for arrays whose bounds jsonb loses.
        exact: Exact,
        output: Oid,
    },
    /// Any other type: its text form.
    Output {
        output: Oid,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exact {
    Never,
    Always,
    /// Arrays: when a lower bound is not 1.
    WhenBounded,
    /// jsonb: when it is the JSON value null, which the image cannot tell
    /// from SQL NULL.
    WhenJsonNull,
}

struct ImageColumn {
    name: String,
    conversion: Conversion,
}

pub struct RowImage {
    columns: Vec<ImageColumn>,
}

/// A value of a row whose jsonb form is not exact: (column position, its
/// text form).
pub type ExactValue = (usize, String);

impl RowImage {
    /// The image builder for `relid`'s rows: one value per live column.
    pub fn for_table(relid: Oid) -> RowImage {
        let columns = columns(relid)
            .into_iter()
            .map(|column| ImageColumn {
                conversion: conversion_for(column.type_oid),
                name: column.name,
            })
            .collect();
        RowImage { columns }
    }

    /// The column names, in the order of each row's values.
    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// How many values `push_row` takes: one per column, in the table's order.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Pushes one row as a jsonb array of its values onto `state`; values
    /// that need it add their exact text to `exact`. Everything is
    /// allocated in the current memory context.
    ///
    /// # Safety
    /// `values` and `nulls` hold one row of the table, `width()` entries
    /// each, in column order; `state` is a parse state inside an array.
    pub unsafe fn push_row(
        &self,
        state: &mut *mut pg_sys::JsonbParseState,
        values: &[Datum],
        nulls: &[bool],
        exact: &mut Vec<ExactValue>,
    ) -> Result<(), InvariantError> {
        // SAFETY: per the contract; every JsonbValue pushed points at data
        // in the current context, which outlives the batch's serialization.
        unsafe {
            pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY, std::ptr::null_mut());
            for (i, column) in self.columns.iter().enumerate() {
                let mut value = match (values.get(i), nulls.get(i)) {
                    (Some(value), Some(false)) => convert(&column.conversion, *value, i, exact)?,
                    _ => null_value(),
                };
                pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_ELEM, &mut value);
            }
            pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_END_ARRAY, std::ptr::null_mut());
        }
        Ok(())
    }
}

/// Mirrors `jsonb_categorize_type`, with `to_jsonb` itself for what is not
/// a scalar.
fn conversion_for(type_oid: Oid) -> Conversion {
    // SAFETY: catalog lookups of an existing type, into locals.
    unsafe {
        let base = pg_sys::getBaseType(type_oid);
        let output = {
            let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
            output
        };
        match base {
            pg_sys::BOOLOID => Conversion::Bool,
            pg_sys::INT2OID => Conversion::Int2,
            pg_sys::INT4OID => Conversion::Int4,
            pg_sys::INT8OID => Conversion::Int8,
            pg_sys::NUMERICOID => Conversion::Numeric { output },
            pg_sys::FLOAT4OID => Conversion::Float4,
            pg_sys::FLOAT8OID => Conversion::Float8,
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => Conversion::DateTime { type_oid: base },
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Conversion::Text,
            _ => {
                let structured = base == pg_sys::JSONOID
                    || base == pg_sys::JSONBOID
                    || pg_sys::get_element_type(base) != pg_sys::InvalidOid
                    || pg_sys::type_is_rowtype(base)
                    || pg_sys::get_range_subtype(base) != pg_sys::InvalidOid;
                if !structured {
                    return Conversion::Output { output };
                }
                let exact = if base == pg_sys::JSONBOID {
                    Exact::WhenJsonNull
                } else if holds_inexact(base, 0) {
                    Exact::Always
                } else if pg_sys::get_element_type(base) != pg_sys::InvalidOid {
                    Exact::WhenBounded
                } else {
                    Exact::Never
                };
                Conversion::ToJsonb {
                    function: to_jsonb_of(type_oid),
                    exact,
                    output,
                }
            }
        }
    }
}

/// True when a value of `type_oid` can hold what jsonb does not carry
/// exactly: json text, a float (its -0), an array bound inside a
/// structure, or jsonb inside one (its null reads as SQL NULL there).
/// `depth` stops a type that contains itself.
fn holds_inexact(type_oid: Oid, depth: u32) -> bool {
    if depth > 8 {
        return true;
    }
    // SAFETY: catalog lookups of existing types.
    unsafe {
        let base = pg_sys::getBaseType(type_oid);
        if matches!(base, pg_sys::JSONOID | pg_sys::FLOAT4OID | pg_sys::FLOAT8OID) {
            return true;
        }
        if base == pg_sys::JSONBOID {
            return depth > 0;
        }
        let element = pg_sys::get_element_type(base);
        if element != pg_sys::InvalidOid {
            // An array inside an array or a composite loses its bounds.
            return depth > 0 || holds_inexact(element, depth + 1);
        }
        let subtype = pg_sys::get_range_subtype(base);
        if subtype != pg_sys::InvalidOid {
            return holds_inexact(subtype, depth + 1);
        }
        if pg_sys::type_is_rowtype(base) {
            let relid = pg_sys::get_typ_typrelid(base);
            return relid == pg_sys::InvalidOid || columns(relid).iter().any(|c| holds_inexact(c.type_oid, depth + 1));
        }
        false
    }
}

/// `to_jsonb` set up for values of `type_oid`: it reads its argument's type
/// from the call's expression, so the call gets one.
fn to_jsonb_of(type_oid: Oid) -> Box<pg_sys::FmgrInfo> {
    // SAFETY: builds, in the current memory context, a function call node
    // with one constant argument of the type, and looks up to_jsonb; the
    // node outlives the capture that uses it.
    unsafe {
        let argument = pg_sys::makeNullConst(type_oid, -1, pg_sys::InvalidOid);
        let mut args = PgList::<pg_sys::Node>::new();
        args.push(argument.cast());
        let call = pg_sys::makeFuncExpr(
            Oid::from(pg_sys::F_TO_JSONB),
            pg_sys::JSONBOID,
            args.into_pg(),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let mut info: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
        pg_sys::fmgr_info(Oid::from(pg_sys::F_TO_JSONB), info.as_mut());
        info.fn_expr = call.cast();
        info
    }
}

/// # Safety
/// `value` must be a non-null value of the type `conversion` was made for.
unsafe fn convert(
    conversion: &Conversion,
    value: Datum,
    position: usize,
    exact: &mut Vec<ExactValue>,
) -> Result<pg_sys::JsonbValue, InvariantError> {
    // SAFETY: per the contract; conversions allocate in the current context.
    unsafe {
        Ok(match conversion {
            Conversion::Bool => {
                let mut boolean: pg_sys::JsonbValue = std::mem::zeroed();
                boolean.type_ = pg_sys::jbvType::jbvBool;
                boolean.val.boolean = value.value() != 0;
                boolean
            }
            Conversion::Int2 => numeric_value(pg_sys::int64_to_numeric(i64::from(value.value() as i16))),
            Conversion::Int4 => numeric_value(pg_sys::int64_to_numeric(i64::from(value.value() as i32))),
            Conversion::Int8 => numeric_value(pg_sys::int64_to_numeric(value.value() as i64)),
            Conversion::Numeric { output } => {
                // A copy: the value may point into a tuple freed before the
                // batch is serialized.
                let numeric = pg_sys::pg_detoast_datum_copy(value.cast_mut_ptr()) as pg_sys::Numeric;
                if pg_sys::numeric_is_nan(numeric) || pg_sys::numeric_is_inf(numeric) {
                    text_value(pg_sys::OidOutputFunctionCall(*output, value))?
                } else {
                    numeric_value(numeric)
                }
            }
            Conversion::Float4 => float_value(f64::from(f32::from_bits(value.value() as u32)), true, position, exact)?,
            Conversion::Float8 => float_value(f64::from_bits(value.value() as u64), false, position, exact)?,
            Conversion::DateTime { type_oid } => text_value(pg_sys::JsonEncodeDateTime(
                std::ptr::null_mut(),
                value,
                *type_oid,
                std::ptr::null(),
            ))?,
            Conversion::Text => {
                let text = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                let len = pgrx::varlena::varsize_any_exhdr(text);
                // A copy: the text may point into a tuple freed before the
                // batch is serialized.
                let copy = pg_sys::palloc(len.max(1)) as *mut std::ffi::c_char;
                std::ptr::copy_nonoverlapping(pgrx::varlena::vardata_any(text) as *const std::ffi::c_char, copy, len);
                checked_string(copy, len)?
            }
            Conversion::ToJsonb {
                function,
                exact: when,
                output,
            } => {
                let keep = match when {
                    Exact::Always => true,
                    Exact::WhenBounded => array_is_bounded(value),
                    Exact::WhenJsonNull => is_json_null(value),
                    Exact::Never => false,
                };
                if keep {
                    let text = pg_sys::OidOutputFunctionCall(*output, value);
                    exact.push((position, CStr::from_ptr(text).to_string_lossy().into_owned()));
                }
                let info = function.as_ref() as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
                let jsonb = pg_sys::FunctionCall1Coll(info, pg_sys::InvalidOid, value);
                binary_value(jsonb)
            }
            Conversion::Output { output } => text_value(pg_sys::OidOutputFunctionCall(*output, value))?,
        })
    }
}

/// True when a jsonb value is the JSON scalar null.
///
/// # Safety
/// `value` must be a non-null jsonb.
unsafe fn is_json_null(value: Datum) -> bool {
    // SAFETY: per the contract; a scalar's root container holds it.
    unsafe {
        let jsonb = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as *mut pg_sys::Jsonb;
        let root = &mut (*jsonb).root;
        if root.header & pg_sys::JB_FSCALAR == 0 {
            return false;
        }
        let mut scalar: pg_sys::JsonbValue = std::mem::zeroed();
        pg_sys::JsonbExtractScalar(root, &mut scalar) && scalar.type_ == pg_sys::jbvType::jbvNull
    }
}

/// True when an array value has a lower bound other than 1.
///
/// # Safety
/// `value` must be a non-null array.
unsafe fn array_is_bounded(value: Datum) -> bool {
    // SAFETY: per the contract; the header gives the dimensions and bounds.
    unsafe {
        let array = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let ndim = (*array).ndim.max(0) as usize;
        // Bounds follow the dimensions, after the fixed header.
        let dims = (array as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
        (0..ndim).any(|i| *dims.add(ndim + i) != 1)
    }
}

/// A float as `to_jsonb` writes it: a number (its shortest exact digits),
/// or the text of NaN and the infinities; -0 (which a jsonb number cannot
/// be) is 0 in the image, its text kept beside.
fn float_value(
    value: f64,
    single: bool,
    position: usize,
    exact: &mut Vec<ExactValue>,
) -> Result<pg_sys::JsonbValue, InvariantError> {
    if value.is_nan() {
        return owned_text("NaN");
    }
    if value.is_infinite() {
        return owned_text(if value > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if value == 0.0 && value.is_sign_negative() {
        exact.push((position, "-0".into()));
    }
    let digits = if single {
        format!("{}", value as f32)
    } else {
        format!("{value}")
    };
    let digits = CString::new(digits).unwrap_or_default();
    // SAFETY: a NUL-terminated decimal numeral, read by numeric's input
    // function into the current context.
    unsafe {
        let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(pg_sys::NUMERICOID, &mut input, &mut ioparam);
        let numeric = pg_sys::OidInputFunctionCall(input, digits.as_ptr() as *mut _, ioparam, -1);
        Ok(numeric_value(numeric.cast_mut_ptr()))
    }
}

fn null_value() -> pg_sys::JsonbValue {
    // SAFETY: a zeroed JsonbValue is valid; a null has no payload.
    let mut value: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    value.type_ = pg_sys::jbvType::jbvNull;
    value
}

fn numeric_value(numeric: pg_sys::Numeric) -> pg_sys::JsonbValue {
    // SAFETY: a zeroed JsonbValue is valid; the union's numeric member is
    // the one set.
    unsafe {
        let mut value: pg_sys::JsonbValue = std::mem::zeroed();
        value.type_ = pg_sys::jbvType::jbvNumeric;
        value.val.numeric = numeric;
        value
    }
}

/// A jsonb value pushed whole: its container, which pushJsonbValue unpacks.
///
/// # Safety
/// `jsonb` must be a jsonb datum alive until the batch is serialized.
pub unsafe fn binary_value(jsonb: Datum) -> pg_sys::JsonbValue {
    // SAFETY: per the contract; a detoasted jsonb is a varlena whose data is
    // its root container; a zeroed JsonbValue is valid, and the union's
    // binary member is the one set.
    unsafe {
        let detoasted = pg_sys::pg_detoast_datum(jsonb.cast_mut_ptr());
        let len = pgrx::varlena::varsize_any_exhdr(detoasted);
        let mut value: pg_sys::JsonbValue = std::mem::zeroed();
        value.type_ = pg_sys::jbvType::jbvBinary;
        value.val.binary.len = len as i32;
        value.val.binary.data = pgrx::varlena::vardata_any(detoasted) as *mut pg_sys::JsonbContainer;
        value
    }
}

pub fn string_value(data: *mut std::ffi::c_char, len: usize) -> pg_sys::JsonbValue {
    // SAFETY: a zeroed JsonbValue is valid; the union's string member is
    // the one set.
    unsafe {
        let mut value: pg_sys::JsonbValue = std::mem::zeroed();
        value.type_ = pg_sys::jbvType::jbvString;
        value.val.string.len = len as i32;
        value.val.string.val = data;
        value
    }
}

/// A string value copied into the current memory context.
fn owned_text(text: &str) -> Result<pg_sys::JsonbValue, InvariantError> {
    let c = CString::new(text).unwrap_or_default();
    // SAFETY: pstrdup copies the NUL-terminated string into the current
    // context, which outlives the batch's serialization.
    unsafe { text_value(pg_sys::pstrdup(c.as_ptr())) }
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
        // untestable: needs a single value over 256 MB, jsonb's own limit (the same error to_jsonb gives)
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
