//! Reading column values straight from the trigger manager's tuple slots,
//! with attribute numbers resolved once per relation (see `relcache`).
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};

use crate::catalog::Column;

/// A row held in one of the trigger manager's tuple slots. Columns are
/// deformed on first read, only as far as the highest one read, and the
/// slot keeps them: nothing is copied or allocated per row. NULL checks of
/// columns not deformed yet read the heap tuple's null bitmap instead.
pub struct Row {
    slot: *mut pg_sys::TupleTableSlot,
    tuple: pg_sys::HeapTuple,
}

impl Row {
    /// # Safety
    /// `slot` must be a valid slot holding a row, and stay so (unchanged)
    /// while the `Row` is used: in a trigger, `tg_trigslot` or `tg_newslot`.
    /// `tuple` is the same row as a heap tuple (`tg_trigtuple` or
    /// `tg_newtuple`), or null.
    pub unsafe fn in_slot(slot: *mut pg_sys::TupleTableSlot, tuple: pg_sys::HeapTuple) -> Row {
        Row { slot, tuple }
    }

    /// Whether `attnum` is a column of the slot's descriptor.
    fn has(&self, attnum: i32) -> bool {
        // SAFETY: per `in_slot`'s contract the slot and its descriptor are valid.
        attnum >= 1 && attnum <= unsafe { (*(*self.slot).tts_tupleDescriptor).natts }
    }

    /// Column `attnum`'s value, or None for NULL (and for a column the
    /// slot's descriptor does not have).
    fn get(&self, attnum: i32) -> Option<Datum> {
        if !self.has(attnum) {
            return None;
        }
        // SAFETY: per `in_slot`'s contract the slot is valid; attributes are
        // read only after slot_getsomeattrs_int deformed them.
        unsafe {
            let slot = self.slot;
            if i32::from((*slot).tts_nvalid) < attnum {
                pg_sys::slot_getsomeattrs_int(slot, attnum);
            }
            let i = (attnum - 1) as usize;
            (!*(*slot).tts_isnull.add(i)).then(|| *(*slot).tts_values.add(i))
        }
    }

    fn is_null(&self, attnum: i32) -> bool {
        if !self.has(attnum) {
            return true;
        }
        // SAFETY: per `in_slot`'s contract; the tuple, when given, is the
        // slot's row, described by the slot's descriptor.
        unsafe {
            if i32::from((*self.slot).tts_nvalid) < attnum && !self.tuple.is_null() {
                return attribute_is_null(self.tuple, (*self.slot).tts_tupleDescriptor, attnum);
            }
        }
        self.get(attnum).is_none()
    }
}

/// True when column `attnum` is NULL in `tuple`, read from its null bitmap
/// without deforming the row.
///
/// # Safety
/// `tuple` must be a valid heap tuple described by `desc`, and `attnum` one
/// of `desc`'s columns.
unsafe fn attribute_is_null(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, attnum: i32) -> bool {
    // SAFETY: per the contract; the header says how many attributes the
    // tuple stores and whether it has a null bitmap of that many bits.
    unsafe {
        let header = (*tuple).t_data;
        let stored = ((*header).t_infomask2 as u32 & pg_sys::HEAP_NATTS_MASK) as i32;
        if attnum > stored {
            // Added after the row was written: its default decides.
            return pg_sys::heap_attisnull(tuple, attnum, desc);
        }
        if (*header).t_infomask as u32 & pg_sys::HEAP_HASNULL == 0 {
            return false;
        }
        let i = (attnum - 1) as usize;
        *(*header).t_bits.as_ptr().add(i >> 3) & (1 << (i & 7)) == 0
    }
}

/// How to read one column of one relation.
#[derive(Debug, Clone)]
pub struct ColumnReader {
    pub name: String,
    attnum: i32,
    /// text and varchar: compared by their bytes, without an output call.
    text_like: bool,
    output_fn: Oid,
    typlen: i16,
    typbyval: bool,
}

impl ColumnReader {
    pub fn new(column: &Column) -> ColumnReader {
        let mut output_fn = pg_sys::InvalidOid;
        let mut is_varlena = false;
        let mut typlen = 0i16;
        let mut typbyval = false;
        // SAFETY: plain syscache lookups of an existing type, into locals.
        unsafe {
            pg_sys::getTypeOutputInfo(column.type_oid, &mut output_fn, &mut is_varlena);
            pg_sys::get_typlenbyval(column.type_oid, &mut typlen, &mut typbyval);
        }
        ColumnReader {
            name: column.name.clone(),
            attnum: column.attnum as i32,
            text_like: column.type_oid == pg_sys::TEXTOID || column.type_oid == pg_sys::VARCHAROID,
            output_fn,
            typlen,
            typbyval,
        }
    }

    /// The column's datum, or None for NULL.
    pub fn datum(&self, row: &Row) -> Option<Datum> {
        row.get(self.attnum)
    }

    pub fn is_null(&self, row: &Row) -> bool {
        row.is_null(self.attnum)
    }

    /// True when the column is NULL in `tuple`, without deforming the row.
    ///
    /// # Safety
    /// `tuple` must be a valid heap tuple of the relation described by
    /// `desc`, the one this reader was built for.
    pub unsafe fn is_null_in(&self, tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> bool {
        // SAFETY: per the contract.
        unsafe { attribute_is_null(tuple, desc, self.attnum) }
    }

    /// Calls `f` with the value in its type's text form, as bytes (None for
    /// NULL), without copying text and varchar values.
    pub fn with_text<R>(&self, row: &Row, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let Some(datum) = self.datum(row) else { return f(None) };
        // SAFETY: `datum` is a non-null value of this column's type; text
        // and varchar are varlenas, and the output function returns a
        // palloc'd C string. Both live in the per-row memory context at
        // least until `f` returns.
        unsafe {
            if self.text_like {
                let packed = inline_varlena(datum);
                let len = pgrx::varlena::varsize_any_exhdr(packed);
                let data = pgrx::varlena::vardata_any(packed) as *const u8;
                f(Some(std::slice::from_raw_parts(data, len)))
            } else {
                let text = pg_sys::OidOutputFunctionCall(self.output_fn, datum);
                f(Some(CStr::from_ptr(text).to_bytes()))
            }
        }
    }

    /// The value in its type's text form, as owned bytes; None for NULL.
    pub fn text(&self, row: &Row) -> Option<Vec<u8>> {
        self.with_text(row, |bytes| bytes.map(<[u8]>::to_vec))
    }

    /// The value for messages: a quoted literal, or NULL.
    pub fn display(&self, row: &Row) -> String {
        match self.text(row) {
            None => "NULL".into(),
            Some(bytes) => format!("'{}'", String::from_utf8_lossy(&bytes)),
        }
    }

    /// The value as it reads in messages without quotes, or NULL.
    pub fn display_plain(&self, row: &Row) -> String {
        self.text(row)
            .map_or("NULL".into(), |bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The value's binary image (its bytes, detoasted), or None for NULL.
    pub fn image(&self, row: &Row) -> Option<Vec<u8>> {
        let datum = self.datum(row)?;
        // SAFETY: a non-null value of this column's type.
        Some(unsafe { datum_image(datum, self.typlen, self.typbyval) })
    }

    /// True when both rows hold the same binary image in this column.
    pub fn same_image(&self, a: &Row, b: &Row) -> bool {
        match (self.datum(a), self.datum(b)) {
            (None, None) => true,
            (Some(x), Some(y)) => self.images_equal(x, y),
            _ => false,
        }
    }

    fn images_equal(&self, x: Datum, y: Datum) -> bool {
        if self.typbyval {
            return x == y;
        }
        // SAFETY: both are non-null values of this column's type, alive
        // while the images are compared.
        unsafe {
            with_datum_image(x, self.typlen, self.typbyval, |a| {
                with_datum_image(y, self.typlen, self.typbyval, |b| a == b)
            })
        }
    }
}

/// Calls `f` with the binary image of a value: a by-value datum's bytes, a
/// varlena's data (detoasted), a C string, or fixed-length bytes.
///
/// # Safety
/// `datum` must be a non-null value of a type of length `typlen`, passed by
/// value when `typbyval`.
pub unsafe fn with_datum_image<R>(datum: Datum, typlen: i16, typbyval: bool, f: impl FnOnce(&[u8]) -> R) -> R {
    if typbyval {
        let len = (typlen.max(0) as usize).min(std::mem::size_of::<Datum>());
        return f(&datum.value().to_ne_bytes()[..len]);
    }
    // SAFETY: per the contract; the header says where a varlena's data is.
    unsafe {
        match typlen {
            -1 => {
                let packed = inline_varlena(datum);
                let len = pgrx::varlena::varsize_any_exhdr(packed);
                f(std::slice::from_raw_parts(
                    pgrx::varlena::vardata_any(packed) as *const u8,
                    len,
                ))
            }
            -2 => f(CStr::from_ptr(datum.cast_mut_ptr()).to_bytes()),
            len => f(std::slice::from_raw_parts(
                datum.cast_mut_ptr::<u8>() as *const u8,
                len as usize,
            )),
        }
    }
}

/// The binary image of a value, copied (see [`with_datum_image`]).
///
/// # Safety
/// As for [`with_datum_image`].
pub unsafe fn datum_image(datum: Datum, typlen: i16, typbyval: bool) -> Vec<u8> {
    // SAFETY: per the contract.
    unsafe { with_datum_image(datum, typlen, typbyval, <[u8]>::to_vec) }
}

/// A varlena datum with its data inline (short or plain 4-byte header):
/// detoasted only when it is compressed or stored out of line.
///
/// # Safety
/// `datum` must be a non-null varlena datum.
unsafe fn inline_varlena(datum: Datum) -> *const pg_sys::varlena {
    let ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: per the contract; the header tells where the data is.
    unsafe {
        if pgrx::varlena::varatt_is_1b_e(ptr) || pgrx::varlena::varatt_is_4b_c(ptr) {
            pg_sys::pg_detoast_datum_packed(ptr)
        } else {
            ptr
        }
    }
}

/// A copy of a value in the current memory context (detoasted), as
/// Postgres' `datumCopy` makes it.
///
/// # Safety
/// `datum` must be a non-null value of a type of length `typlen`, passed by
/// value when `typbyval`.
pub unsafe fn copy_datum(datum: Datum, typlen: i16, typbyval: bool) -> Datum {
    if typbyval {
        return datum;
    }
    // SAFETY: per the contract; the copy is palloc'd.
    unsafe {
        match typlen {
            -1 => Datum::from(pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr())),
            -2 => Datum::from(pg_sys::pstrdup(datum.cast_mut_ptr())),
            len => {
                let len = len.max(0) as usize;
                let copy = pg_sys::palloc(len);
                std::ptr::copy_nonoverlapping(datum.cast_mut_ptr::<u8>(), copy as *mut u8, len);
                Datum::from(copy)
            }
        }
    }
}
