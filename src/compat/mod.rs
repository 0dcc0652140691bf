//! Where PostgreSQL's API differs between the versions pg_invariants
//! builds for (15 to 18), one module per difference. Everything else is
//! the same code for every version.
pub mod updated_columns;
