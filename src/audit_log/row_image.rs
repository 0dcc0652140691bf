//! The jsonb the log's view shows for each entry (`row_data`): each
//! column's value as `to_jsonb` writes it, with each column's conversion
//! resolved once per capture. Integers, numerics, floats, booleans, dates
//! and timestamps and text are converted here directly; arrays, composites,
//! ranges, json and jsonb go through `to_jsonb`'s own function. A type with
//! its own cast to json is shown in its text form (the cast is never
//! called). Restore does not read this: it reads the binary images.
use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::PgList;

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
    ToJsonb(Box<pg_sys::FmgrInfo>),
    /// A type that no longer exists: its values cannot be read.
    Gone,
    /// Any other type: its text form.
    Output {
        output: Oid,
    },
}

/// Builds the jsonb of entries whose fields have the given types.
pub struct JsonImage {
    /// (name, conversion) per field; no names for jsonb entries.
    columns: Vec<(Option<String>, Conversion)>,
    /// For UPDATE entries, each field's part: `k` key, `o` old, `n` new.
    parts: Option<Vec<char>>,
}

/// The objects of an UPDATE entry, by part.
const PARTS: [(char, &str); 3] = [('k', "key"), ('o', "old"), ('n', "new")];

impl JsonImage {
    /// For fields named `names` (None: each entry is one jsonb value) of
    /// `types`, in `parts` (UPDATE entries only).
    pub fn new(names: Option<&[String]>, types: &[Oid], parts: Option<&str>) -> JsonImage {
        let columns = types
            .iter()
            .enumerate()
            .map(|(i, &type_oid)| (names.and_then(|n| n.get(i).cloned()), conversion_for(type_oid)))
            .collect();
        JsonImage {
            columns,
            parts: parts.map(|p| p.chars().collect()),
        }
    }

    /// The entry's jsonb: an object of its fields (for an UPDATE entry,
    /// one object per part), or the jsonb value itself for an entry
    /// without names.
    ///
    /// # Safety
    /// `values` holds one entry's fields, each a value of its type or None
    /// for NULL (or for a value that could not be read, given as text in
    /// `unreadable`).
    pub unsafe fn row_data(
        &self,
        values: &[Option<Datum>],
        unreadable: &[Option<String>],
    ) -> Result<Datum, InvariantError> {
        // SAFETY: per the contract; everything is allocated in the current
        // memory context.
        unsafe {
            if self.columns.first().is_some_and(|(name, _)| name.is_none()) {
                return Ok(values.first().copied().flatten().unwrap_or(Datum::from(0)));
            }
            let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
            let begin = pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT;
            let end = pg_sys::JsonbIteratorToken::WJB_END_OBJECT;
            pg_sys::pushJsonbValue(&mut state, begin, std::ptr::null_mut());
            match &self.parts {
                None => self.push_fields(&mut state, values, unreadable, |_| true)?,
                Some(parts) => {
                    for (part, label) in PARTS {
                        let mut key = owned_text(label)?;
                        pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut key);
                        pg_sys::pushJsonbValue(&mut state, begin, std::ptr::null_mut());
                        self.push_fields(&mut state, values, unreadable, |i| parts.get(i) == Some(&part))?;
                        pg_sys::pushJsonbValue(&mut state, end, std::ptr::null_mut());
                    }
                }
            }
            let object = pg_sys::pushJsonbValue(&mut state, end, std::ptr::null_mut());
            Ok(Datum::from(pg_sys::JsonbValueToJsonb(object)))
        }
    }

    /// Pushes the fields `wanted` (by position) as keys and values into the
    /// object open in `state`.
    ///
    /// # Safety
    /// As [`JsonImage::row_data`], with an object open in `state`.
    unsafe fn push_fields(
        &self,
        state: &mut *mut pg_sys::JsonbParseState,
        values: &[Option<Datum>],
        unreadable: &[Option<String>],
        wanted: impl Fn(usize) -> bool,
    ) -> Result<(), InvariantError> {
        // SAFETY: per the contract.
        unsafe {
            for (i, (name, conversion)) in self.columns.iter().enumerate() {
                let Some(name) = name.as_ref().filter(|_| wanted(i)) else {
                    continue;
                };
                let mut key = owned_text(name)?;
                pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut key);
                let mut value = match (values.get(i).copied().flatten(), unreadable.get(i).cloned().flatten()) {
                    (Some(datum), _) => convert(conversion, datum)?,
                    (None, Some(text)) => owned_text(&text)?,
                    (None, None) => null_value(),
                };
                pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_VALUE, &mut value);
            }
        }
        Ok(())
    }
}

/// Mirrors `jsonb_categorize_type`, with `to_jsonb` itself for what is not
/// a scalar.
fn conversion_for(type_oid: Oid) -> Conversion {
    if !super::binary::type_exists(type_oid) {
        return Conversion::Gone;
    }
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
                Conversion::ToJsonb(to_jsonb_of(type_oid))
            }
        }
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
unsafe fn convert(conversion: &Conversion, value: Datum) -> Result<pg_sys::JsonbValue, InvariantError> {
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
                let numeric = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as pg_sys::Numeric;
                if pg_sys::numeric_is_nan(numeric) || pg_sys::numeric_is_inf(numeric) {
                    text_value(pg_sys::OidOutputFunctionCall(*output, value))?
                } else {
                    numeric_value(numeric)
                }
            }
            Conversion::Float4 => float_value(f64::from(f32::from_bits(value.value() as u32)), true)?,
            Conversion::Float8 => float_value(f64::from_bits(value.value() as u64), false)?,
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
            Conversion::ToJsonb(function) => {
                let info = function.as_ref() as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
                let jsonb = pg_sys::FunctionCall1Coll(info, pg_sys::InvalidOid, value);
                binary_value(jsonb)
            }
            Conversion::Output { output } => text_value(pg_sys::OidOutputFunctionCall(*output, value))?,
            Conversion::Gone => null_value(),
        })
    }
}

/// A float as `to_jsonb` writes it: a number (its shortest exact digits),
/// or the text of NaN and the infinities; -0 (which a jsonb number cannot
/// be) is 0.
fn float_value(value: f64, single: bool) -> Result<pg_sys::JsonbValue, InvariantError> {
    if value.is_nan() {
        return owned_text("NaN");
    }
    if value.is_infinite() {
        return owned_text(if value > 0.0 { "Infinity" } else { "-Infinity" });
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
