//! The extension's read-only queries. pgrx's `Spi::get_one` and friends
//! run every statement read-write, and to do so assign the transaction an
//! id even for a SELECT. A transaction id assigned by a DDL command's event
//! trigger makes `DROP INDEX CONCURRENTLY` fail ("must be first action in
//! transaction"), and a read-only transaction that calls the extension
//! would write WAL for nothing. These run through `SpiClient::select`,
//! which reads with the current snapshot until the transaction has written
//! (then read-write, so that every write before is seen).
use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::prelude::*;
use pgrx::spi::SpiError;

use crate::catalog::spi;

/// The first column of the first row of `query`; None when it returns no
/// row or NULL.
pub fn one<T: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect(|client| {
        first(
            client
                .select(query, Some(1), args)
                .and_then(|rows| rows.first().get_one()),
        )
    })
    .flatten()
}

/// The first two columns of the first row of `query`.
pub fn two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> (Option<A>, Option<B>) {
    Spi::connect(|client| {
        first(
            client
                .select(query, Some(1), args)
                .and_then(|rows| rows.first().get_two()),
        )
    })
    .unwrap_or((None, None))
}

/// The first three columns of the first row of `query`; None when it
/// returns no row.
pub fn three<A, B, C>(query: &str, args: &[DatumWithOid]) -> Option<(Option<A>, Option<B>, Option<C>)>
where
    A: FromDatum + IntoDatum,
    B: FromDatum + IntoDatum,
    C: FromDatum + IntoDatum,
{
    Spi::connect(|client| {
        first(
            client
                .select(query, Some(1), args)
                .and_then(|rows| rows.first().get_three()),
        )
    })
}

/// The row read, None when there was none; any other failure is raised.
fn first<T>(result: Result<T, SpiError>) -> Option<T> {
    match result {
        Err(SpiError::InvalidPosition) => None,
        other => Some(spi(other)),
    }
}

/// Runs `f` with one snapshot, taken now and after this transaction's own
/// changes, that the reads of [`one_in_snapshot`] (and
/// `catalog::first_row_in_snapshot`) inside all see: two tables read as
/// one state of the database, however many queries.
pub fn in_one_snapshot<R>(f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            // SAFETY: pops the snapshot pushed below.
            unsafe { pgrx::pg_sys::PopActiveSnapshot() };
        }
    }
    // SAFETY: makes the transaction's own changes visible, then pushes a
    // snapshot (a new one at READ COMMITTED, the transaction's above),
    // popped by the guard on every path.
    unsafe {
        pgrx::pg_sys::CommandCounterIncrement();
        pgrx::pg_sys::PushActiveSnapshot(pgrx::pg_sys::GetTransactionSnapshot());
    }
    let _pop = Pop;
    f()
}

/// The first column of the first row of `query`, read with the active
/// snapshot (see [`in_one_snapshot`]).
pub fn one_in_snapshot<T: FromDatum>(query: &str, args: &[DatumWithOid]) -> Option<T> {
    let value = crate::catalog::first_row_in_snapshot(query, args).into_iter().next()?;
    // SAFETY: a value of its own type, copied out of SPI's memory.
    unsafe { T::from_polymorphic_datum(value.datum?, false, value.type_oid) }
}
