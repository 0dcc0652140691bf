//! Guards seen from real sessions: the delete budget is per transaction,
//! and an application role cannot switch the guards off.
use pg_invariants_client_tests::{fresh_role, sqlstate, TestDb};

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
