//! The logic of pg_invariants that needs no server, tested with plain
//! `cargo test`: rule specs and their parsing, identifier and literal
//! quoting, the SQL text the extension generates, state graphs, the
//! declarations of every trigger it puts on user tables, the parents-first
//! ordering of restore, and small pure helpers.
pub mod count_sql;
pub mod fast_hash;
pub mod health;
pub mod order;
pub mod quote;
pub mod schedule;
pub mod spec;
pub mod transitions;
pub mod triggers;
