//! The values a rule names (`when_values`, `allowed`, a graph's states, a
//! repair's `set`), compared in the column's own type.
//!
//! A value is stored in its canonical text: read with the column's input
//! function under the declarer's settings, written back with its output
//! function under fixed ones (`privilege::with_canonical_formats`). It is
//! read back under those same fixed settings, so no session setting
//! (`DateStyle`, `TimeZone`, `extra_float_digits`, ...) changes what it
//! means or what matches it. Rows are compared with the type's own
//! equality, or by binary image for the types whose equality is exactly
//! that. Every conversion runs as the table's owner: a domain's CHECK or a
//! type's input function is the owner's code.
use std::ffi::CString;

use pgrx::pg_sys::{self, Datum, Oid};

use crate::catalog::{equality_operator, quote_literal, Column, Table, Value};
use crate::errors::{Code, InvariantError};
use crate::fast_hash::FastMap;
use crate::privilege::{as_table_owner, with_canonical_formats};
use crate::tuple::{datum_image, with_datum_image, ColumnReader, Row};
use crate::xact::in_subtransaction;

/// How a column's type reads and writes values as text.
struct TypeIo {
    input: Oid,
    ioparam: Oid,
    output: Oid,
}

fn type_io(type_oid: Oid) -> TypeIo {
    let (mut input, mut ioparam, mut output, mut varlena) =
        (pg_sys::InvalidOid, pg_sys::InvalidOid, pg_sys::InvalidOid, false);
    // SAFETY: catalog lookups of an existing type, into locals.
    unsafe {
        pg_sys::getTypeInputInfo(type_oid, &mut input, &mut ioparam);
        pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
    }
    TypeIo { input, ioparam, output }
}

/// `text` read by the column's input function (its type modifier
/// enforced), in the current memory context.
fn read(column: &Column, io: &TypeIo, text: &str) -> Datum {
    let text = CString::new(text.replace('\0', "")).unwrap_or_default();
    // SAFETY: calls an existing type's input function on a NUL-terminated
    // string; it raises an ERROR on bad input.
    unsafe { pg_sys::OidInputFunctionCall(io.input, text.as_ptr() as *mut _, io.ioparam, column.typmod) }
}

fn write(io: &TypeIo, datum: Datum) -> String {
    // SAFETY: a non-null value of the type `io` was made for; the output
    // function returns a palloc'd C string.
    unsafe {
        let text = pg_sys::OidOutputFunctionCall(io.output, datum);
        std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

/// Refuses a column whose type has no equality: no value could match.
pub fn comparable(table: &Table, column: &Column, arg: &str) -> Result<(), InvariantError> {
    if equality_operator(column.type_oid).is_some() {
        return Ok(());
    }
    Err(InvariantError::new(
        Code::ERRCODE_UNDEFINED_FUNCTION,
        format!(
            "argument {arg}: column \"{}\" of table {} is of type {}, which has no equality operator",
            column.name,
            table.display(),
            column.type_name
        ),
    )
    .hint("A rule compares the column with the values it names; declare it on a column whose type can be compared."))
}

/// The canonical text of each of `values` for `column` of `table`, read
/// under the caller's settings; an error naming `arg` for one that is not
/// a valid value of the column.
pub fn canonical(table: &Table, column: &Column, values: &[String], arg: &str) -> Result<Vec<String>, InvariantError> {
    comparable(table, column, arg)?;
    let io = type_io(column.type_oid);
    values
        .iter()
        .map(|value| {
            let converted = in_subtransaction(|| {
                as_table_owner(table.oid, || {
                    let datum = read(column, &io, value);
                    with_canonical_formats(|| write(&io, datum))
                })
            });
            converted.map_err(|problem| {
                InvariantError::new(
                    Code::ERRCODE_DATATYPE_MISMATCH,
                    format!(
                        "argument {arg}: {} is not a valid value for column \"{}\" of type {}",
                        quote_literal(value),
                        column.name,
                        column.type_name
                    ),
                )
                .detail(problem)
            })
        })
        .collect()
}

/// `values` (canonical text) as values of `column`, for query arguments,
/// in the current memory context.
pub fn typed(table: &Table, column: &Column, values: &[String]) -> Vec<Value> {
    let io = type_io(column.type_oid);
    as_table_owner(table.oid, || {
        with_canonical_formats(|| {
            values
                .iter()
                .map(|v| Value {
                    datum: Some(read(column, &io, v)),
                    type_oid: column.type_oid,
                })
                .collect()
        })
    })
}

/// A memory context of its own, deleted with its owner.
struct OwnedContext(pg_sys::MemoryContext);

impl OwnedContext {
    fn new() -> OwnedContext {
        // SAFETY: creates a child of TopMemoryContext, deleted only by Drop.
        OwnedContext(unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"pg_invariants rule values".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        })
    }
}

impl Drop for OwnedContext {
    fn drop(&mut self) {
        // SAFETY: the context was created by `new` and is deleted once.
        unsafe { pg_sys::MemoryContextDelete(self.0) };
    }
}

/// True when two values of the type are equal exactly when their binary
/// images are: then a set of images decides, with no function call.
fn equal_by_image(column: &Column) -> bool {
    // SAFETY: catalog lookups of an existing type and collation.
    unsafe {
        let base = pg_sys::getBaseType(column.type_oid);
        let fixed = [
            pg_sys::INT2OID,
            pg_sys::INT4OID,
            pg_sys::INT8OID,
            pg_sys::OIDOID,
            pg_sys::BOOLOID,
            pg_sys::CHAROID,
            pg_sys::DATEOID,
            pg_sys::TIMEOID,
            pg_sys::TIMESTAMPOID,
            pg_sys::TIMESTAMPTZOID,
            pg_sys::UUIDOID,
        ];
        let text = base == pg_sys::TEXTOID || base == pg_sys::VARCHAROID;
        fixed.contains(&base)
            || pg_sys::type_is_enum(base)
            || (text
                && (column.collation == pg_sys::InvalidOid || pg_sys::get_collation_isdeterministic(column.collation)))
    }
}

enum Comparison {
    /// Image -> position of the first declared value with it.
    Images(FastMap<Vec<u8>, usize>),
    /// The declared values, compared with the type's equality.
    Equality {
        values: Vec<Datum>,
        equal: Box<pg_sys::FmgrInfo>,
        collation: Oid,
    },
}

/// Declared values compiled for one column of one relation.
pub struct ValueSet {
    comparison: Comparison,
    typlen: i16,
    typbyval: bool,
    _memory: Option<OwnedContext>,
}

impl ValueSet {
    /// Reads `values` (canonical text) as values of `column`, as the owner
    /// of `table`. An error when one no longer reads (the column's type
    /// changed since the rule was declared).
    pub fn compile(table: &Table, column: &Column, values: &[String]) -> Result<ValueSet, String> {
        let io = type_io(column.type_oid);
        let (mut typlen, mut typbyval) = (0i16, false);
        // SAFETY: a catalog lookup of an existing type, into locals.
        unsafe { pg_sys::get_typlenbyval(column.type_oid, &mut typlen, &mut typbyval) };
        let memory = OwnedContext::new();
        let datums = in_subtransaction(|| {
            as_table_owner(table.oid, || {
                with_canonical_formats(|| {
                    // SAFETY: the values are made in the set's own memory,
                    // which lives as long as the set.
                    unsafe {
                        let previous = pg_sys::MemoryContextSwitchTo(memory.0);
                        let datums: Vec<Datum> = values.iter().map(|v| read(column, &io, v)).collect();
                        pg_sys::MemoryContextSwitchTo(previous);
                        datums
                    }
                })
            })
        })?;
        let comparison = if equal_by_image(column) {
            let mut images = FastMap::default();
            for (i, datum) in datums.iter().enumerate() {
                // SAFETY: a non-null value of the column's type.
                images
                    .entry(unsafe { datum_image(*datum, typlen, typbyval) })
                    .or_insert(i);
            }
            Comparison::Images(images)
        } else {
            // SAFETY: a type cache lookup of an existing type; the function
            // info is filled in the set's own memory.
            let equal = unsafe {
                let entry = pg_sys::lookup_type_cache(column.type_oid, pg_sys::TYPECACHE_EQ_OPR_FINFO as i32);
                if (*entry).eq_opr_finfo.fn_oid == pg_sys::InvalidOid {
                    return Err(format!("type {} has no equality operator", column.type_name));
                }
                let mut info: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
                pg_sys::fmgr_info_cxt((*entry).eq_opr_finfo.fn_oid, info.as_mut(), memory.0);
                info
            };
            Comparison::Equality {
                values: datums,
                equal,
                collation: column.collation,
            }
        };
        Ok(ValueSet {
            comparison,
            typlen,
            typbyval,
            _memory: Some(memory),
        })
    }

    /// The position among the declared values of the first one equal to
    /// `datum`.
    pub fn position(&self, datum: Datum) -> Option<usize> {
        match &self.comparison {
            Comparison::Images(images) => {
                // SAFETY: a non-null value of the column's type.
                unsafe { with_datum_image(datum, self.typlen, self.typbyval, |image| images.get(image).copied()) }
            }
            Comparison::Equality {
                values,
                equal,
                collation,
            } => values
                .iter()
                .position(|value| self.equal(equal, *collation, datum, *value)),
        }
    }

    fn equal(&self, equal: &pg_sys::FmgrInfo, collation: Oid, a: Datum, b: Datum) -> bool {
        // SAFETY: an equality function of the column's type, called on two
        // non-null values of it; it returns a bool.
        unsafe {
            let info = equal as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
            pg_sys::FunctionCall2Coll(info, collation, a, b).value() != 0
        }
    }

    /// True when the column holds one of the declared values in `row`.
    pub fn contains(&self, reader: &ColumnReader, row: &Row) -> bool {
        reader.datum(row).is_some_and(|datum| self.position(datum).is_some())
    }

    /// True when the column holds the same value in both rows (both NULL
    /// included).
    pub fn same(&self, reader: &ColumnReader, a: &Row, b: &Row) -> bool {
        match (reader.datum(a), reader.datum(b)) {
            (None, None) => true,
            (Some(x), Some(y)) => match &self.comparison {
                Comparison::Images(_) => reader.same_image(a, b),
                Comparison::Equality { equal, collation, .. } => self.equal(equal, *collation, x, y),
            },
            _ => false,
        }
    }
}
