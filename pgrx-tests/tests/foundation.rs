//! The extension installs and drops cleanly, its tables are closed to
//! ordinary roles, and a client reads every field of its errors.
use pg_invariants_client_tests::{fresh_role, installed_version, sqlstate, TestDb};

#[test]
fn extension_installs_and_drops_cleanly() {
    let db = TestDb::new("pgi_install");
    let mut c = db.client();
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'invariants'::regnamespace
              AND relname IN ('audit_log', 'rule_definitions')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 2);
    c.batch_execute("DROP EXTENSION pg_invariants").unwrap();
    let schemas: i64 = c
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'invariants'", &[])
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "DROP EXTENSION leaves no schema behind");
    c.batch_execute("CREATE EXTENSION pg_invariants").unwrap();
    let version = installed_version(&mut c);
    assert!(!version.is_empty());
}

#[test]
fn ordinary_role_cannot_write_the_extension_tables() {
    let db = TestDb::new("pgi_privileges");
    fresh_role("pgi_app");
    let mut app = db.client_as("pgi_app");
    let insert_log = app.batch_execute(
        "INSERT INTO invariants.audit_log (op, schema_name, table_name) VALUES ('DELETE', 'public', 'x')",
    );
    assert_eq!(sqlstate(insert_log), "42501");
    assert_eq!(
        sqlstate(app.batch_execute("SELECT * FROM invariants.audit_log")),
        "42501"
    );
    let insert_rule = app.batch_execute(
        "INSERT INTO invariants.rule_definitions (tbl, name, kind, spec) VALUES ('pg_class', 'r', 'x', '{}')",
    );
    assert_eq!(sqlstate(insert_rule), "42501");
    assert_eq!(
        sqlstate(app.batch_execute("DELETE FROM invariants.rule_definitions")),
        "42501"
    );
    assert_eq!(
        sqlstate(app.query("SELECT invariants.prune_audit('1 day')", &[])),
        "42501"
    );
    // Reading the rules is allowed: they describe the schema.
    app.query("SELECT * FROM invariants.rule_definitions", &[]).unwrap();
}

#[test]
fn client_reads_sqlstate_and_table_fields_of_an_error() {
    let db = TestDb::new("pgi_error_fields");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1);
         SELECT invariants.enable_audit('gone'); DELETE FROM gone;",
    )
    .unwrap();
    let err = c.batch_execute("DELETE FROM invariants.audit_log").unwrap_err();
    let db_error = err.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "42501");
    assert_eq!(db_error.schema(), Some("invariants"));
    assert_eq!(db_error.table(), Some("audit_log"));
    assert!(db_error.hint().unwrap_or_default().contains("prune_audit"));
}

#[test]
fn client_reads_constraint_and_table_of_a_rule_violation() {
    let db = TestDb::new("pgi_rule_fields");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE prospects (id serial PRIMARY KEY, status text NOT NULL DEFAULT 'pending', contacted_at timestamptz);
         SELECT invariants.require_not_null('prospects', 'contacted_at', 'status', ARRAY['connection_request_sent']);",
    )
    .unwrap();
    let err = c
        .execute("INSERT INTO prospects (status) VALUES ('connection_request_sent')", &[])
        .unwrap_err();
    let db_error = err.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "23514");
    assert_eq!(db_error.constraint(), Some("contacted_at_required_when_status"));
    assert_eq!(db_error.table(), Some("prospects"));
    assert_eq!(db_error.schema(), Some("public"));
    assert!(db_error.detail().unwrap_or_default().contains("Failing row key: (id)="));
    assert!(db_error.hint().is_some());
    let rows: i64 = c.query_one("SELECT count(*) FROM prospects", &[]).unwrap().get(0);
    assert_eq!(rows, 0);
    // The session is usable afterwards and a valid row goes in.
    c.execute(
        "INSERT INTO prospects (status, contacted_at) VALUES ('connection_request_sent', now())",
        &[],
    )
    .unwrap();
}
