//! Row images in the format Postgres' binary COPY gives each tuple: a field
//! count, then each field's length (-1 for NULL) and its bytes as the
//! column type's send function writes them. That is exact for every type
//! (a float's -0, an array's bounds, json's own text, jsonb's null), it is
//! compact, and restore hands it to COPY FROM unchanged: the rows come back
//! at the speed of a plain COPY.
//!
//! Text goes out and comes back in the database's encoding: capture,
//! restore and the log's view run with `client_encoding` pinned to it (see
//! `privilege::with_canonical_formats`), so that no conversion happens on
//! either side. A type without binary send and receive functions is written
//! in its text form instead (format `t`), which restore reads back with the
//! type's input function.
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};

use crate::catalog::columns;
use crate::errors::{Code, InvariantError};

/// The signature and flags of binary COPY's header.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Binary COPY's trailer: a field count of -1.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// How one column's values are written.
enum Encode {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// date: days, as int32.
    Date,
    /// timestamp and timestamptz: microseconds, as int64.
    Timestamp,
    Uuid,
    /// text, varchar, bytea: the value's bytes as they are.
    Bytes,
    /// Through the type's send function.
    Send(Box<pg_sys::FmgrInfo>),
    /// The type's text form (it has no binary send function).
    Text(Oid),
}

/// Writes values of one type as binary COPY fields.
pub struct ValueEncoder {
    type_oid: Oid,
    encode: Encode,
}

impl ValueEncoder {
    pub fn new(type_oid: Oid) -> ValueEncoder {
        ValueEncoder {
            type_oid,
            encode: encode_for(type_oid),
        }
    }

    pub fn type_oid(&self) -> Oid {
        self.type_oid
    }

    /// `b` binary, `t` text (the type has no binary send function).
    pub fn format(&self) -> char {
        if matches!(self.encode, Encode::Text(_)) {
            't'
        } else {
            'b'
        }
    }

    /// Appends one field: the value's length and bytes, or -1 for NULL.
    ///
    /// # Safety
    /// `value` must be None or a value of the type; run with
    /// `client_encoding` pinned (see the module's comment).
    pub unsafe fn append(&self, value: Option<Datum>, out: &mut Vec<u8>) {
        match value {
            // SAFETY: per the contract.
            Some(value) => unsafe { encode_value(&self.encode, value, out) },
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

struct ColumnCodec {
    name: String,
    /// Where the column's value is in the rows given to `encode_row`.
    source: usize,
    value: ValueEncoder,
}

/// What a capture's row images hold: each field's name (None for jsonb
/// entries), type, format, and for UPDATE entries its part (`k` the row's
/// key, `o` an old value, `n` a new one).
pub struct Layout {
    pub columns: Option<Vec<String>>,
    pub types: Vec<Oid>,
    pub formats: String,
    pub parts: Option<String>,
}

/// Writes the rows of one table.
pub struct Encoder {
    columns: Vec<ColumnCodec>,
    /// How many values each row given to `encode_row` has.
    width: usize,
    /// Rows of a table, whose fields have names (not jsonb entries).
    named: bool,
}

impl Encoder {
    /// The encoder of `relid`'s rows, given with one value per live
    /// column; the columns named in `exclude` are left out of the images.
    pub fn for_table(relid: Oid, exclude: &[String]) -> Encoder {
        let live = columns(relid);
        let width = live.len();
        let columns = live
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !exclude.contains(&c.name))
            .map(|(source, c)| ColumnCodec {
                value: ValueEncoder::new(c.type_oid),
                source,
                name: c.name,
            })
            .collect();
        Encoder {
            columns,
            width,
            named: true,
        }
    }

    /// One field of type jsonb: events and entries written by hand.
    pub fn for_jsonb() -> Encoder {
        Encoder {
            columns: vec![ColumnCodec {
                name: String::new(),
                source: 0,
                value: ValueEncoder::new(pg_sys::JSONBOID),
            }],
            width: 1,
            named: false,
        }
    }

    pub fn layout(&self) -> Layout {
        Layout {
            columns: self
                .named
                .then(|| self.columns.iter().map(|c| c.name.clone()).collect()),
            types: self.columns.iter().map(|c| c.value.type_oid).collect(),
            formats: self.columns.iter().map(|c| c.value.format()).collect(),
            parts: None,
        }
    }

    /// How many values each row given to `encode_row` has.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Appends one row as a binary COPY tuple.
    ///
    /// # Safety
    /// `values` and `nulls` hold one row, `width()` entries each (a
    /// table's: in column order); run with `client_encoding` pinned (see
    /// the module's comment).
    pub unsafe fn encode_row(&self, values: &[Datum], nulls: &[bool], out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.columns.len() as i16).to_be_bytes());
        for column in &self.columns {
            let value = match (values.get(column.source), nulls.get(column.source)) {
                (Some(value), Some(false)) => Some(*value),
                _ => None,
            };
            // SAFETY: a value of the column's type, or None.
            unsafe { column.value.append(value, out) };
        }
    }
}

fn encode_for(type_oid: Oid) -> Encode {
    // SAFETY: catalog lookups of an existing type.
    unsafe {
        match pg_sys::getBaseType(type_oid) {
            pg_sys::BOOLOID => Encode::Bool,
            pg_sys::INT2OID => Encode::Int2,
            pg_sys::INT4OID => Encode::Int4,
            pg_sys::INT8OID => Encode::Int8,
            pg_sys::FLOAT4OID => Encode::Float4,
            pg_sys::FLOAT8OID => Encode::Float8,
            pg_sys::DATEOID => Encode::Date,
            pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => Encode::Timestamp,
            pg_sys::UUIDOID => Encode::Uuid,
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BYTEAOID => Encode::Bytes,
            _ => {
                let (mut send, mut varlena) = (pg_sys::InvalidOid, false);
                let (mut receive, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
                let has_send = binary_functions(type_oid, &mut send, &mut varlena, &mut receive, &mut ioparam);
                if has_send {
                    let mut info: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
                    pg_sys::fmgr_info(send, info.as_mut());
                    Encode::Send(info)
                } else {
                    let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
                    pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
                    Encode::Text(output)
                }
            }
        }
    }
}

/// The type's binary send and receive functions; false when it lacks one.
///
/// # Safety
/// `type_oid` must be an existing type.
unsafe fn binary_functions(
    type_oid: Oid,
    send: &mut Oid,
    varlena: &mut bool,
    receive: &mut Oid,
    ioparam: &mut Oid,
) -> bool {
    // SAFETY: per the contract; reads the type's pg_type row.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::TYPEOID as i32, Datum::from(type_oid));
        if tuple.is_null() {
            return false;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tuple);
        let has = (*form).typsend != pg_sys::InvalidOid && (*form).typreceive != pg_sys::InvalidOid;
        pg_sys::ReleaseSysCache(tuple);
        if has {
            pg_sys::getTypeBinaryOutputInfo(type_oid, send, varlena);
            pg_sys::getTypeBinaryInputInfo(type_oid, receive, ioparam);
        }
        has
    }
}

/// # Safety
/// `value` must be a non-null value of the type `encode` was made for.
unsafe fn encode_value(encode: &Encode, value: Datum, out: &mut Vec<u8>) {
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let raw = value.value() as u64;
    // SAFETY: per the contract; by-value types are read from the datum's
    // bits as Postgres stores them, varlenas through their headers.
    unsafe {
        match encode {
            Encode::Bool => field(out, &[u8::from(raw != 0)]),
            Encode::Int2 => field(out, &(raw as i16).to_be_bytes()),
            Encode::Int4 | Encode::Date => field(out, &(raw as i32).to_be_bytes()),
            Encode::Int8 | Encode::Timestamp => field(out, &(raw as i64).to_be_bytes()),
            Encode::Float4 => field(out, &(raw as u32).to_be_bytes()),
            Encode::Float8 => field(out, &raw.to_be_bytes()),
            Encode::Uuid => field(out, std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), 16)),
            Encode::Bytes => {
                let detoasted = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                let len = pgrx::varlena::varsize_any_exhdr(detoasted);
                field(
                    out,
                    std::slice::from_raw_parts(pgrx::varlena::vardata_any(detoasted) as *const u8, len),
                );
            }
            Encode::Send(info) => {
                let info = info.as_ref() as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
                let bytes = pg_sys::SendFunctionCall(info, value);
                let len = pgrx::varlena::varsize_any_exhdr(bytes);
                field(
                    out,
                    std::slice::from_raw_parts(pgrx::varlena::vardata_any(bytes) as *const u8, len),
                );
            }
            Encode::Text(output) => {
                let text = pg_sys::OidOutputFunctionCall(*output, value);
                field(out, CStr::from_ptr(text).to_bytes());
            }
        }
    }
}

/// The fields of each tuple in `images` (binary COPY tuples, one after the
/// other): None for NULL.
pub struct Tuples<'a> {
    bytes: &'a [u8],
    at: usize,
}

pub fn tuples(bytes: &[u8]) -> Tuples<'_> {
    Tuples { bytes, at: 0 }
}

impl<'a> Tuples<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    /// The next tuple's fields, or None at the end (or on bytes that are
    /// not tuples, which the log never holds).
    pub fn next_tuple(&mut self) -> Option<Vec<Option<&'a [u8]>>> {
        let count = i16::from_be_bytes(self.take(2)?.try_into().ok()?);
        let mut fields = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            let len = i32::from_be_bytes(self.take(4)?.try_into().ok()?);
            fields.push(if len < 0 { None } else { Some(self.take(len as usize)?) });
        }
        Some(fields)
    }

    /// The bytes of the next tuple as they are, or None at the end.
    pub fn next_raw(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        self.next_tuple()?;
        self.bytes.get(start..self.at)
    }
}

/// Reads values written by an [`Encoder`] back as datums of their types.
pub struct Decoder {
    /// None for a column whose type no longer exists.
    columns: Vec<Option<ColumnDecoder>>,
    missing: Option<Oid>,
}

struct ColumnDecoder {
    /// Receive (binary) or input (text) function.
    function: Box<pg_sys::FmgrInfo>,
    ioparam: Oid,
    binary: bool,
    /// Shown only: a domain inside an array, a composite or a range, whose
    /// receive function would run the domain's checks.
    unreadable: bool,
}

/// What the values are read for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Put back, as the table's owner: a domain's checks run (as that
    /// owner).
    Restore,
    /// Shown in the log's view, to whoever reads it: no code of a type's
    /// owner may run, so a domain is read as its base type, and a value
    /// holding a domain inside something else is not read at all.
    Show,
}

impl Decoder {
    /// The decoder of values of `types`, written in `formats` (`b` or `t`
    /// per column), for `purpose`.
    pub fn new(types: &[Oid], formats: &str, purpose: Purpose) -> Decoder {
        let formats: Vec<char> = formats.chars().collect();
        let missing = types.iter().copied().find(|t| !type_exists(*t));
        let columns = types
            .iter()
            .enumerate()
            .map(|(i, &type_oid)| {
                let binary = formats.get(i) != Some(&'t');
                // SAFETY: the type is checked to exist before its functions
                // are looked up; the function info lives in the box.
                unsafe {
                    if type_exists(type_oid) {
                        let (type_oid, unreadable) = match purpose {
                            Purpose::Restore => (type_oid, false),
                            Purpose::Show => {
                                let base = pg_sys::getBaseType(type_oid);
                                (base, holds_domain(base, 0))
                            }
                        };
                        let (mut function, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
                        if binary {
                            pg_sys::getTypeBinaryInputInfo(type_oid, &mut function, &mut ioparam);
                        } else {
                            pg_sys::getTypeInputInfo(type_oid, &mut function, &mut ioparam);
                        }
                        let mut info: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
                        pg_sys::fmgr_info(function, info.as_mut());
                        Some(ColumnDecoder {
                            function: info,
                            ioparam,
                            binary,
                            unreadable,
                        })
                    } else {
                        None
                    }
                }
            })
            .collect();
        Decoder { columns, missing }
    }

    /// A logged type that no longer exists, if any: its values cannot be
    /// read back.
    pub fn missing_type(&self) -> Option<Oid> {
        self.missing
    }

    /// The value of column `column` written as `bytes`, in the current
    /// memory context.
    ///
    /// # Safety
    /// Run with `client_encoding` pinned, as the capture was.
    pub unsafe fn decode(&self, column: usize, bytes: &[u8]) -> Result<Datum, InvariantError> {
        let Some(c) = self
            .columns
            .get(column)
            .and_then(Option::as_ref)
            .filter(|c| !c.unreadable)
        else {
            return Err(bad_image());
        };
        // SAFETY: a StringInfo holding a copy of the bytes (NUL-terminated,
        // as the receive functions expect), read by the column's function.
        unsafe {
            let info = c.function.as_ref() as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
            if c.binary {
                let buf = pg_sys::makeStringInfo();
                pg_sys::appendBinaryStringInfo(buf, bytes.as_ptr().cast(), bytes.len() as i32);
                let value = pg_sys::ReceiveFunctionCall(info, buf, c.ioparam, -1);
                if (*buf).cursor != (*buf).len {
                    return Err(bad_image());
                }
                Ok(value)
            } else {
                let text = std::ffi::CString::new(bytes).map_err(|_| bad_image())?;
                Ok(pg_sys::InputFunctionCall(info, text.as_ptr() as *mut _, c.ioparam, -1))
            }
        }
    }
}

/// True when the type exists (a logged one may have been dropped since).
pub fn type_exists(type_oid: Oid) -> bool {
    // SAFETY: a syscache probe by OID.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::TYPEOID as i32,
            Datum::from(type_oid),
            Datum::from(0),
            Datum::from(0),
            Datum::from(0),
        )
    }
}

/// True when a value of `type_oid` holds a domain inside it (as an array's
/// elements, a composite's column or a range's bounds). `depth` stops a
/// type that contains itself.
fn holds_domain(type_oid: Oid, depth: u32) -> bool {
    if depth > 8 {
        return true;
    }
    // SAFETY: catalog lookups of existing types.
    unsafe {
        let base = pg_sys::getBaseType(type_oid);
        if depth > 0 && base != type_oid {
            return true;
        }
        let element = pg_sys::get_element_type(base);
        if element != pg_sys::InvalidOid {
            return holds_domain(element, depth + 1);
        }
        let subtype = pg_sys::get_range_subtype(base);
        if subtype != pg_sys::InvalidOid {
            return holds_domain(subtype, depth + 1);
        }
        if pg_sys::type_is_rowtype(base) {
            let relid = pg_sys::get_typ_typrelid(base);
            return relid == pg_sys::InvalidOid || columns(relid).iter().any(|c| holds_domain(c.type_oid, depth + 1));
        }
        false
    }
}

pub fn bad_image() -> InvariantError {
    // untestable: the log holds only images the extension wrote
    InvariantError::new(
        Code::ERRCODE_DATA_CORRUPTED,
        "an audit log row image is not in the format the extension writes",
    )
}
