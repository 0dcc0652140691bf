//! pg_invariants: a database's invariants kept inside PostgreSQL.
//!
//! The shared core lives in `errors`, `guc`, `catalog`, `relcache` and
//! `privilege`; each capability has its own module whose files are named after
//! the SQL functions and triggers they define.
#![deny(ffi_unwind_calls)]
// InvariantError carries every field Postgres reports (message, DETAIL,
// HINT, schema, table, column, constraint) and is made on error paths only,
// where its size costs nothing.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pub mod audit;
pub mod audit_log;
pub mod catalog;
pub mod compat;
pub mod errors;
pub use pg_invariants_core::fast_hash;
pub mod guards;
pub mod guc;
pub mod health;
pub mod json_arg;
pub mod privilege;
pub mod registry;
pub mod relcache;
pub mod rules;
pub mod soft_delete;
pub mod sql;
pub mod table_config;
pub mod tuple;
pub mod xact;

/// Every capability, as the trigger registry sees it. A trigger two of them
/// need (the TRUNCATE guard) belongs to the first: refusing comes before
/// keeping, keeping before logging.
pub const CAPABILITIES: [registry::Capability; 4] = [
    rules::CAPABILITY,
    guards::CAPABILITY,
    soft_delete::CAPABILITY,
    audit::CAPABILITY,
];

/// The extension's schema. It is created by the extension script (not by the
/// control file) so that DROP EXTENSION removes it too.
#[pg_schema]
pub mod invariants {}

// The schema's tables, views and grants. Everything else is declared next to
// the Rust code it calls.
pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Errors never carry a Rust backtrace, whatever RUST_BACKTRACE holds in
    // the server's environment: pgrx appends one to the DETAIL of errors it
    // raises again when capturing is on. (Set before any capture: the
    // standard library reads it once.)
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    guc::register();
    relcache::register_invalidation_callback();
    xact::register_callbacks();
    soft_delete::preload::install_if_preloading();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let mut options = vec![
            // scripts/test checks that every error is raised by a test.
            "pg_invariants_test.error_coverage = '/tmp/pg_invariants_test/error-sites'",
        ];
        // pg_cron is Debian's package, built for PostgreSQL 15 here.
        if cfg!(feature = "pg15") {
            options.extend([
                "shared_preload_libraries = 'pg_cron'",
                "cron.database_name = 'pgrx_tests'",
            ]);
        }
        options
    }
}

#[cfg(any(test, feature = "pg_test"))]
pub mod testing;

#[cfg(any(test, feature = "pg_test"))]
mod security_tests;
