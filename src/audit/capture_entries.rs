//! `invariants.capture_entries(capture bigint) RETURNS SETOF record`: the
//! entries of the UPDATE capture that `restore` is reverting, as typed rows
//! (the key and old values decoded, each new value as the bytea of its
//! image, then the entry's position), for the one statement that reverts
//! them all. It answers only for that capture while `restore` reverts it:
//! the log is not readable through it otherwise.
//!
//! Rows go to a tuplestore that spills to disk past `work_mem`, so memory
//! stays bounded whatever the capture's size; the values are decoded as the
//! role running the statement (the table's owner).
use std::cell::Cell;

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;

use super::put_back::{batch_images, batches};
use crate::audit_log::binary::{self, Decoder, Purpose};
use crate::errors::{Code, InvariantError};
use crate::privilege::with_canonical_formats;

crate::c_function!(capture_entries, pg_finfo_capture_entries, capture_entries_of);

pgrx::extension_sql!(
    r#"
-- Its row estimate is set high: the statement that reads it caps it with
-- the capture's entry count (LIMIT), which the planner then uses.
CREATE FUNCTION invariants.capture_entries(capture bigint) RETURNS SETOF record
    LANGUAGE c ROWS 1000000000 AS 'MODULE_PATHNAME', 'capture_entries';
COMMENT ON FUNCTION invariants.capture_entries(bigint) IS
    'The entries of the UPDATE capture invariants.restore is reverting; usable only by it.';
"#,
    name = "capture_entries",
    requires = ["schema"]
);

/// The capture being reverted, with what its images hold.
pub struct Reverting {
    pub capture: i64,
    pub types: Vec<pg_sys::Oid>,
    pub formats: String,
    /// Per field: true for a new value (returned as its image's bytes).
    pub raw: Vec<bool>,
}

thread_local! {
    static REVERTING: Cell<Option<*const Reverting>> = const { Cell::new(None) };
}

/// Runs `f` with `capture_entries` answering for `reverting`.
pub fn reverting<R>(reverting: &Reverting, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<*const Reverting>);
    impl Drop for Reset {
        fn drop(&mut self) {
            REVERTING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REVERTING.with(|r| r.replace(Some(reverting as *const Reverting))));
    f()
}

fn capture_entries_of(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: Postgres calls this with one bigint argument; the capture set
    // by `reverting` outlives the statement that calls this.
    let (capture, reverting) = unsafe {
        let args = (*fcinfo).args.as_slice(1);
        let capture = (!args[0].isnull).then(|| args[0].value.value() as i64);
        let reverting = REVERTING.with(Cell::get).map(|r| &*r);
        (capture, reverting)
    };
    let Some(reverting) = reverting.filter(|r| Some(r.capture) == capture) else {
        return Err(InvariantError::new(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "invariants.capture_entries can only be used by invariants.restore",
        )
        .hint("Read the log through the view invariants.audit_log."));
    };
    // SAFETY: a set-returning function called in materialize mode (checked)
    // with a column definition list; tuples are formed with that list's
    // descriptor, in the per-query memory the tuplestore lives in.
    unsafe {
        let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        if rsinfo.is_null()
            || (*rsinfo).allowedModes & pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32 == 0
            || (*rsinfo).expectedDesc.is_null()
        {
            // untestable: restore calls it in a FROM clause with a column definition list
            return Err(InvariantError::new(
                Code::ERRCODE_FEATURE_NOT_SUPPORTED,
                "invariants.capture_entries must be called in FROM with a column definition list",
            ));
        }
        let width = reverting.types.len();
        let desc = (*rsinfo).expectedDesc;
        if (*desc).natts as usize != width + 1 {
            // untestable: restore writes the column definition list from the same capture
            return Err(InvariantError::new(
                Code::ERRCODE_DATATYPE_MISMATCH,
                "the column definition list does not match the capture",
            ));
        }
        let per_query = (*(*rsinfo).econtext).ecxt_per_query_memory;
        let old = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = per_query;
        let desc = pg_sys::CreateTupleDescCopy(desc);
        let store = pg_sys::tuplestore_begin_heap(true, false, pg_sys::work_mem);
        (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
        (*rsinfo).setResult = store;
        (*rsinfo).setDesc = desc;
        pg_sys::CurrentMemoryContext = old;

        let decoder = Decoder::new(&reverting.types, &reverting.formats, Purpose::Restore);
        let mut rows = pgrx::PgMemoryContexts::new("pg_invariants capture entries");
        let mut position = 0i64;
        with_canonical_formats(|| {
            for first_id in batches(reverting.capture) {
                let images = batch_images(reverting.capture, first_id);
                let mut tuples = binary::tuples(&images);
                while let Some(fields) = tuples.next_tuple() {
                    position += 1;
                    let mut values = vec![Datum::from(0); width + 1];
                    let mut nulls = vec![true; width + 1];
                    let mut outcome = Ok(());
                    rows.switch_to(|_| {
                        for (i, field) in fields.iter().enumerate().take(width) {
                            let Some(bytes) = field else { continue };
                            let value = if reverting.raw[i] {
                                Ok(bytes.into_datum().unwrap_or(Datum::from(0)))
                            } else {
                                decoder.decode(i, bytes)
                            };
                            match value {
                                Ok(datum) => {
                                    values[i] = datum;
                                    nulls[i] = false;
                                }
                                Err(error) => {
                                    outcome = Err(error);
                                    return;
                                }
                            }
                        }
                        values[width] = Datum::from(position);
                        nulls[width] = false;
                        pg_sys::tuplestore_putvalues(store, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
                    });
                    outcome?;
                    if position % 1000 == 0 {
                        rows.reset();
                    }
                }
            }
            Ok::<_, InvariantError>(())
        })?;
        (*fcinfo).isnull = true;
        Ok(Datum::from(0))
    }
}
