//! The audit log seen from real sessions: statement text, restore of one
//! transaction's losses, and pg_dump/pg_restore keeping log and settings.
use std::process::Command;

use pg_invariants_client_tests::{bin, fresh_role, host, port, sqlstate, TestDb};

#[test]
fn delete_records_the_client_statement_and_restore_by_txid_brings_it_back() {
    let db = TestDb::new("pgi_audit_txid");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 10) i;
         SELECT invariants.enable_audit('notes');",
    )
    .unwrap();
    // Two transactions lose rows; only the first is restored.
    let mut tx = c.transaction().unwrap();
    tx.execute("DELETE FROM notes WHERE id <= 3", &[]).unwrap();
    let txid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    c.execute("DELETE FROM notes WHERE id = 10", &[]).unwrap();

    let statement: String = c
        .query_one(
            "SELECT DISTINCT statement FROM invariants.audit_log WHERE txid::text = $1",
            &[&txid],
        )
        .unwrap()
        .get(0);
    assert_eq!(statement, "DELETE FROM notes WHERE id <= 3");
    let application: String = c
        .query_one("SELECT DISTINCT application_name FROM invariants.audit_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(application, "pgi_tests");

    let row = c
        .query_one(
            "SELECT tbl::text, restored, skipped FROM invariants.restore($1::text::xid8)",
            &[&txid],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)),
        ("notes".into(), 3, 0)
    );
    let ids: Vec<i32> = c
        .query("SELECT id FROM notes ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    // Again: nothing more.
    let again = c
        .query("SELECT * FROM invariants.restore($1::text::xid8)", &[&txid])
        .unwrap();
    assert!(again.is_empty());
}

#[test]
fn a_role_without_privileges_cannot_restore_or_read_the_log() {
    let db = TestDb::new("pgi_audit_roles");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE secrets (id int PRIMARY KEY, v text);
         INSERT INTO secrets VALUES (1, 'x');
         SELECT invariants.enable_audit('secrets');
         DELETE FROM secrets;
         GRANT ALL ON secrets TO PUBLIC;",
    )
    .unwrap();
    fresh_role("pgi_intruder");
    let mut intruder = db.client_as("pgi_intruder");
    assert_eq!(
        sqlstate(intruder.query("SELECT * FROM invariants.audit_log", &[])),
        "42501"
    );
    assert_eq!(
        sqlstate(intruder.query(
            "SELECT * FROM invariants.restore(tbl => 'secrets', since => now() - interval '1 hour')",
            &[]
        )),
        "42501"
    );
    assert_eq!(
        sqlstate(intruder.query("SELECT invariants.disable_audit('secrets')", &[])),
        "42501"
    );
    assert_eq!(
        sqlstate(intruder.execute("UPDATE invariants.audited_tables SET truncate_capture_limit = 0", &[])),
        "42501"
    );
    let rows: i64 = c.query_one("SELECT count(*) FROM secrets", &[]).unwrap().get(0);
    assert_eq!(rows, 0);
}

#[test]
fn pg_dump_and_pg_restore_keep_the_log_rules_and_audit_settings() {
    let source = TestDb::new("pgi_dump_source");
    let mut c = source.client();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, status text, done_at timestamptz);
         INSERT INTO items SELECT i, 'open', NULL FROM generate_series(1, 5) i;
         SELECT invariants.enable_audit('items', truncate_capture_limit => 42);
         SELECT invariants.require_not_null('items', 'done_at', 'status', ARRAY['done']);
         DELETE FROM items WHERE id <= 2;",
    )
    .unwrap();
    let dump = std::env::temp_dir().join("pgi_dump_source.dump");
    let status = Command::new(bin("pg_dump"))
        .args(["-h", &host(), "-p", &port().to_string(), "-U", "postgres", "-Fc", "-f"])
        .arg(&dump)
        .arg(&source.name)
        .status()
        .expect("run pg_dump");
    assert!(status.success());

    let target = TestDb::without_extension("pgi_dump_target");
    let status = Command::new(bin("pg_restore"))
        .args([
            "-h",
            &host(),
            "-p",
            &port().to_string(),
            "-U",
            "postgres",
            "--exit-on-error",
            "-d",
            &target.name,
        ])
        .arg(&dump)
        .status()
        .expect("run pg_restore");
    assert!(status.success());

    let mut t = target.client();
    let entries: i64 = t
        .query_one(
            "SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE' AND tbl = 'items'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(entries, 2);
    let limit: i64 = t
        .query_one(
            "SELECT truncate_capture_limit FROM invariants.audited_tables WHERE tbl = 'items'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(limit, 42);
    // The restored database keeps enforcing and auditing.
    assert_eq!(sqlstate(t.execute("UPDATE items SET status = 'done'", &[])), "23514");
    t.execute("DELETE FROM items WHERE id = 3", &[]).unwrap();
    let entries: i64 = t
        .query_one("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE'", &[])
        .unwrap()
        .get(0);
    assert_eq!(entries, 3);
    let restored: i64 = t
        .query_one(
            "SELECT sum(restored)::bigint FROM invariants.restore(tbl => 'items', since => '-infinity')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(restored, 3);
}

#[test]
fn restore_of_a_transaction_reverts_its_updates_and_keeps_a_later_writers_change() {
    let db = TestDb::new("pgi_audit_update_txid");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE campaign_prospects (id int PRIMARY KEY, status text NOT NULL, contacted_at timestamptz);
         INSERT INTO campaign_prospects SELECT i, 'pending', NULL FROM generate_series(1, 73) i;
         SELECT invariants.enable_audit('campaign_prospects', updates => true);",
    )
    .unwrap();
    // The endpoint marks 53 prospects as sent, in one transaction.
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "UPDATE campaign_prospects SET status = 'connection_request_sent' WHERE id <= 53",
        &[],
    )
    .unwrap();
    let txid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    // Another session then changes one of those rows for real.
    let mut other = db.client();
    other
        .execute(
            "UPDATE campaign_prospects SET status = 'replied', contacted_at = now() WHERE id = 7",
            &[],
        )
        .unwrap();

    let row = c
        .query_one(
            "SELECT restored, skipped, conflicts::text FROM invariants.restore($1::text::xid8)",
            &[&txid],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, String>(2)),
        (52, 0, r#"[{"id": 7}]"#.to_string())
    );
    let statuses: Vec<(String, i64)> = c
        .query(
            "SELECT status, count(*) FROM campaign_prospects GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses, [("pending".to_string(), 72), ("replied".to_string(), 1)]);
    // Again: nothing more, nothing changed.
    assert!(c
        .query("SELECT * FROM invariants.restore($1::text::xid8)", &[&txid])
        .unwrap()
        .is_empty());
    let pending: i64 = c
        .query_one("SELECT count(*) FROM campaign_prospects WHERE status = 'pending'", &[])
        .unwrap()
        .get(0);
    assert_eq!(pending, 72);
}

#[test]
fn the_application_user_is_recorded_with_each_change_it_makes() {
    let db = TestDb::new("pgi_audit_context");
    let mut c = db.client();
    fresh_role("pgi_webapp");
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET invariants.audit_context = 'app.user_id';
         CREATE TABLE deals (id int PRIMARY KEY, stage text);
         INSERT INTO deals VALUES (1, 'open'), (2, 'open');
         GRANT SELECT, UPDATE, DELETE ON deals TO pgi_webapp;
         SELECT invariants.enable_audit('deals', updates => true);",
        db.name
    ))
    .unwrap();
    let mut app = db.client_as("pgi_webapp");
    // The application cannot change what is recorded: before the library
    // is loaded in its session the SET is only a placeholder, dropped (with
    // a WARNING) when it loads; after, it is refused.
    app.batch_execute("SET invariants.audit_context = ''").unwrap();
    app.batch_execute(
        "BEGIN;
         SELECT set_config('app.user_id', 'alice@example.com', true);
         UPDATE deals SET stage = 'won' WHERE id = 1;
         COMMIT;
         BEGIN;
         SET LOCAL app.user_id = 'bob@example.com';
         DELETE FROM deals WHERE id = 2;
         COMMIT;",
    )
    .unwrap();
    assert_eq!(
        sqlstate(app.batch_execute("SET invariants.audit_context = ''")),
        "42501"
    );
    let rows: Vec<(String, String, String)> = c
        .query(
            "SELECT op, db_user, context->>'app.user_id' FROM invariants.audit_log ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            ("UPDATE".into(), "pgi_webapp".into(), "alice@example.com".into()),
            ("DELETE".into(), "pgi_webapp".into(), "bob@example.com".into()),
        ]
    );
}
