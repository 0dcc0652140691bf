//! Helpers for `#[pg_test]`s: run a statement and report the error it
//! raised, field by field, as a PL/pgSQL handler (and so a client) sees it.
use pgrx::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtError {
    pub sqlstate: String,
    pub message: String,
    pub detail: String,
    pub hint: String,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub constraint: String,
}

/// Runs `sql` in a subtransaction and returns the error it raised, or None.
/// The subtransaction is rolled back either way only when it fails.
pub fn error_of(sql: &str) -> Option<CaughtError> {
    // Created once per session, so that a test that switched roles can
    // still call it.
    Spi::run(
        r#"DO $do$ BEGIN IF pg_catalog.to_regprocedure('pg_temp.error_of(text)') IS NULL THEN
        CREATE FUNCTION pg_temp.error_of(stmt text) RETURNS text[] LANGUAGE plpgsql AS $f$
        DECLARE s text; m text; d text; h text; sc text; t text; c text; k text;
        BEGIN
            EXECUTE stmt;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                h = PG_EXCEPTION_HINT, sc = SCHEMA_NAME, t = TABLE_NAME, c = COLUMN_NAME, k = CONSTRAINT_NAME;
            RETURN ARRAY[s, m, d, h, sc, t, c, k];
        END $f$;
        END IF; END $do$"#,
    )
    .expect("create pg_temp.error_of");
    let fields = Spi::get_one_with_args::<Vec<Option<String>>>("SELECT pg_temp.error_of($1)", &[sql.into()])
        .expect("run pg_temp.error_of")?;
    let field = |i: usize| fields.get(i).cloned().flatten().unwrap_or_default();
    Some(CaughtError {
        sqlstate: field(0),
        message: field(1),
        detail: field(2),
        hint: field(3),
        schema: field(4),
        table: field(5),
        column: field(6),
        constraint: field(7),
    })
}

/// The SQLSTATE `sql` fails with; panics if it succeeds.
pub fn sqlstate_of(sql: &str) -> String {
    match error_of(sql) {
        Some(error) => error.sqlstate,
        None => panic!("expected an error from: {sql}"),
    }
}

pub fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).expect("query").unwrap_or(0)
}

/// Runs `sql` (one or more statements); panics with the statement on error.
pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The text value `sql` returns ("" for NULL).
pub fn text(sql: &str) -> String {
    Spi::get_one::<String>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_default()
}
