//! Guards seen from real sessions: the delete budget is per transaction,
//! and an application role cannot switch the guards off.
use pg_invariants_client_tests::{fresh_role, one, sqlstate, TestDb};

#[test]
fn the_delete_budget_resets_in_the_next_transaction() {
    let db = TestDb::new("pgi_guard_budget");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE deals (id int PRIMARY KEY);
         INSERT INTO deals SELECT generate_series(1, 100);
         SELECT invariants.protect('deals', max_delete_rows => 10);",
    )
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.execute("DELETE FROM deals WHERE id <= 8", &[]).unwrap();
    let err = tx
        .execute("DELETE FROM deals WHERE id BETWEEN 9 AND 11", &[])
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("54000"));
    drop(tx); // rolled back
              // Each new transaction starts with the whole budget.
    for range in [(1, 10), (11, 20)] {
        let mut tx = c.transaction().unwrap();
        tx.execute("DELETE FROM deals WHERE id BETWEEN $1 AND $2", &[&range.0, &range.1])
            .unwrap();
        tx.commit().unwrap();
    }
    let left: i64 = c.query_one("SELECT count(*) FROM deals", &[]).unwrap().get(0);
    assert_eq!(left, 80);
    // Outside a transaction block each statement is its own transaction.
    c.execute("DELETE FROM deals WHERE id BETWEEN 21 AND 30", &[]).unwrap();
    c.execute("DELETE FROM deals WHERE id BETWEEN 31 AND 40", &[]).unwrap();
    assert_eq!(sqlstate(c.execute("DELETE FROM deals WHERE id > 40", &[])), "54000");
}

#[test]
fn an_application_role_cannot_lift_the_guards() {
    let db = TestDb::new("pgi_guard_roles");
    let mut owner = db.client();
    owner
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY);
             INSERT INTO accounts SELECT generate_series(1, 50);
             SELECT invariants.protect('accounts', 10);
             GRANT ALL ON accounts TO PUBLIC;",
        )
        .unwrap();
    fresh_role("pgi_guard_app");
    let mut app = db.client_as("pgi_guard_app");
    app.batch_execute("SET invariants.max_delete_rows = 0; SET invariants.allow_truncate = on")
        .unwrap();
    assert_eq!(sqlstate(app.execute("DELETE FROM accounts", &[])), "42501");
    assert_eq!(sqlstate(app.execute("TRUNCATE accounts", &[])), "42501");
    assert_eq!(
        sqlstate(app.query("SELECT invariants.unprotect('accounts')", &[])),
        "42501"
    );
    assert_eq!(
        sqlstate(app.execute("DELETE FROM invariants.protected_tables", &[])),
        "42501"
    );
    let rows: i64 = owner.query_one("SELECT count(*) FROM accounts", &[]).unwrap().get(0);
    assert_eq!(rows, 50);
}

/// Each session caches what is declared on a table; a declaration another
/// session commits takes effect in it at its next statement.
#[test]
fn a_declaration_committed_elsewhere_is_seen_at_once() {
    let db = TestDb::new("pgi_guard_other_session");
    let mut app = db.client();
    let mut admin = db.client();
    app.batch_execute(
        "CREATE TABLE deals (id int PRIMARY KEY, stage text, deleted_at timestamptz);
         INSERT INTO deals SELECT g, 'open' FROM generate_series(1, 100) g;
         SELECT invariants.enable_audit('deals');
         DELETE FROM deals WHERE id = 100;
         UPDATE deals SET stage = 'won' WHERE id = 99;",
    )
    .unwrap();
    let updates_logged = "SELECT count(*) FROM invariants.audit_log WHERE op = 'UPDATE'";
    assert_eq!(one(&mut app, updates_logged), 0);
    admin
        .batch_execute(
            "SELECT invariants.protect('deals', max_delete_rows => 5, max_update_rows => 5);
             SELECT invariants.enable_audit('deals', updates => true);",
        )
        .unwrap();
    assert_eq!(sqlstate(app.execute("DELETE FROM deals WHERE id <= 10", &[])), "54000");
    assert_eq!(
        sqlstate(app.execute("UPDATE deals SET stage = 'x' WHERE id <= 10", &[])),
        "54000"
    );
    assert_eq!(sqlstate(app.execute("TRUNCATE deals", &[])), "55000");
    app.execute("UPDATE deals SET stage = 'lost' WHERE id = 1", &[])
        .unwrap();
    assert_eq!(one(&mut app, updates_logged), 1);
    admin
        .batch_execute(
            "SELECT invariants.unprotect('deals');
             SELECT invariants.enable_soft_delete('deals');",
        )
        .unwrap();
    // Trigger mode: the row stays, so DELETE reports none.
    assert_eq!(app.execute("DELETE FROM deals WHERE id <= 10", &[]).unwrap(), 0);
    let kept = one(&mut app, "SELECT count(*) FROM deals WHERE deleted_at IS NOT NULL");
    assert_eq!(kept, 10, "soft-deleted, not removed");
    admin
        .batch_execute("SELECT invariants.disable_soft_delete('deals')")
        .unwrap();
    assert_eq!(app.execute("DELETE FROM deals WHERE id = 50", &[]).unwrap(), 1);
    let left = one(&mut app, "SELECT count(*) FROM deals WHERE id = 50");
    assert_eq!(left, 0);
}
