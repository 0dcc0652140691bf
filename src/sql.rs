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
