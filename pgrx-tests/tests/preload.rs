//! Soft delete with the library in shared_preload_libraries: clients see a
//! soft delete as the delete it was meant to be (command tag, affected rows,
//! RETURNING), in every way a DELETE reaches the table.
use pg_invariants_client_tests::{one, TestDb};
use postgres::Client;

fn incident(name: &str) -> (TestDb, Client) {
    let db = TestDb::preloaded(name);
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, deleted_at timestamptz);
         CREATE TABLE talent (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE, deleted_at timestamptz);
         CREATE TABLE deal (id int PRIMARY KEY, talent_id int REFERENCES talent ON DELETE CASCADE, deleted_at timestamptz);
         INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 10) i;
         INSERT INTO talent SELECT i, 1 + i % 10 FROM generate_series(1, 40) i;
         INSERT INTO deal SELECT i, 1 + i % 40 FROM generate_series(1, 100) i;
         SELECT invariants.enable_soft_delete('users');",
    )
    .unwrap();
    (db, c)
}

#[test]
fn delete_reports_the_rows_it_soft_deleted() {
    let (_db, mut c) = incident("pgi_preload_tags");
    // Single row, multi row, already deleted: extended protocol (execute).
    assert_eq!(c.execute("DELETE FROM users WHERE id = 1", &[]).unwrap(), 1);
    assert_eq!(c.execute("DELETE FROM users WHERE id <= 3", &[]).unwrap(), 2);
    assert_eq!(c.execute("DELETE FROM users WHERE id = 1", &[]).unwrap(), 0);
    // Simple query protocol: the command tag itself.
    let messages = c.simple_query("DELETE FROM users WHERE id = 4").unwrap();
    let tag_rows = messages.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(tag_rows, Some(1));
    // Nothing was removed; the cascade soft-deleted children as well.
    assert_eq!(one(&mut c, "SELECT count(*) FROM users"), 10);
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"),
        4
    );
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM talent WHERE deleted_at IS NOT NULL"),
        16
    );
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM deal WHERE deleted_at IS NOT NULL"),
        40
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM deal"), 100);
    let mode: String = c
        .query_one("SELECT invariants.health() ->> 'soft_delete_mode'", &[])
        .unwrap()
        .get(0);
    assert_eq!(mode, "preload");
}

#[test]
fn returning_prepared_statements_ctes_views_and_plpgsql() {
    let (_db, mut c) = incident("pgi_preload_paths");
    // RETURNING gives the rows as they are after the soft delete.
    let rows = c
        .query(
            "DELETE FROM users WHERE id IN (1, 2) RETURNING id, deleted_at IS NOT NULL",
            &[],
        )
        .unwrap();
    let returned: Vec<(i32, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(returned.len(), 2);
    assert!(returned.iter().all(|(_, soft)| *soft));
    // A prepared statement, executed twice.
    let statement = c.prepare("DELETE FROM users WHERE id = $1").unwrap();
    assert_eq!(c.execute(&statement, &[&3]).unwrap(), 1);
    assert_eq!(c.execute(&statement, &[&3]).unwrap(), 0);
    // In a CTE.
    assert_eq!(
        one(
            &mut c,
            "WITH gone AS (DELETE FROM users WHERE id = 4 RETURNING id) SELECT count(*) FROM gone"
        ),
        1
    );
    // Through a view.
    c.batch_execute("CREATE VIEW active_users AS SELECT * FROM users WHERE deleted_at IS NULL")
        .unwrap();
    assert_eq!(c.execute("DELETE FROM active_users WHERE id = 5", &[]).unwrap(), 1);
    // From PL/pgSQL.
    c.batch_execute(
        "CREATE FUNCTION remove_user(target int) RETURNS bigint LANGUAGE plpgsql AS $$
         DECLARE n bigint; BEGIN DELETE FROM users WHERE id = target; GET DIAGNOSTICS n = ROW_COUNT; RETURN n; END $$",
    )
    .unwrap();
    assert_eq!(one(&mut c, "SELECT remove_user(6)"), 1);
    assert_eq!(one(&mut c, "SELECT remove_user(6)"), 0);
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"),
        6
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM users"), 10);
}

#[test]
fn other_tables_and_hard_cascades_are_unchanged_by_preloading() {
    let (_db, mut c) = incident("pgi_preload_other");
    c.batch_execute(
        "CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain SELECT generate_series(1, 5);
         CREATE TABLE accounts (id int PRIMARY KEY);
         CREATE TABLE notes (id int PRIMARY KEY, account_id int REFERENCES accounts ON DELETE CASCADE, deleted_at timestamptz);
         INSERT INTO accounts VALUES (1); INSERT INTO notes VALUES (1, 1);
         SELECT invariants.enable_soft_delete('notes');",
    )
    .unwrap();
    assert_eq!(c.execute("DELETE FROM plain WHERE id <= 2", &[]).unwrap(), 2);
    assert_eq!(one(&mut c, "SELECT count(*) FROM plain"), 3);
    let err = c.execute("DELETE FROM accounts", &[]).unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23503"));
    assert_eq!(one(&mut c, "SELECT count(*) FROM notes"), 1);
    // purge still really deletes.
    c.batch_execute(
        "CREATE TABLE logs (id int PRIMARY KEY, deleted_at timestamptz);
         INSERT INTO logs SELECT generate_series(1, 3);
         SELECT invariants.enable_soft_delete('logs');
         DELETE FROM logs WHERE id = 1;
         BEGIN; SET LOCAL invariants.allow_undelete = on;
         UPDATE logs SET deleted_at = now() - interval '90 days' WHERE id = 1;
         COMMIT;",
    )
    .unwrap();
    assert_eq!(one(&mut c, "SELECT invariants.purge('logs', '30 days')"), 1);
    assert_eq!(one(&mut c, "SELECT count(*) FROM logs"), 2);
}

#[test]
fn stored_generated_columns_follow_the_soft_delete() {
    let db = TestDb::preloaded("pgi_preload_generated");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE members (id int PRIMARY KEY, deleted_at timestamptz,
                               active boolean GENERATED ALWAYS AS (deleted_at IS NULL) STORED);
         INSERT INTO members (id) VALUES (1), (2);
         SELECT invariants.enable_soft_delete('members');",
    )
    .unwrap();
    assert_eq!(c.execute("DELETE FROM members WHERE id = 1", &[]).unwrap(), 1);
    let active: bool = c
        .query_one("SELECT active FROM members WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert!(!active, "the generated column is recomputed");
    let active: bool = c
        .query_one("SELECT active FROM members WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert!(active);
}

#[test]
fn reads_and_ddl_assign_no_transaction_id() {
    for db in [TestDb::new("pgi_xid_plain"), TestDb::preloaded("pgi_xid_preload")] {
        let mut c = db.client();
        c.batch_execute(
            "CREATE TABLE plain_t (id int PRIMARY KEY, v text);
             CREATE INDEX plain_v ON plain_t (v);
             CREATE TABLE kept (id int PRIMARY KEY, v text, status text, done_at timestamptz, deleted_at timestamptz);
             CREATE INDEX kept_v ON kept (v);
             SELECT invariants.protect('kept');
             SELECT invariants.require_not_null('kept', 'done_at', 'status', ARRAY['done']);",
        )
        .unwrap();
        // An event trigger that assigned a transaction id would make these fail
        // ("must be first action in transaction").
        c.batch_execute("DROP INDEX CONCURRENTLY plain_v").unwrap();
        c.batch_execute("DROP INDEX CONCURRENTLY kept_v").unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(
            "SELECT * FROM invariants.lint();
             SELECT invariants.health();
             SELECT * FROM invariants.violations();
             SELECT * FROM invariants.violating_rows('kept');
             SELECT * FROM invariants.rules;
             DELETE FROM plain_t WHERE id = 1;",
        )
        .unwrap();
        let xid: Option<String> = tx
            .query_one("SELECT pg_current_xact_id_if_assigned()::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(xid, None, "{}", db.name);
        tx.rollback().unwrap();
    }
}

#[test]
fn planner_errors_keep_every_field_and_carry_no_backtrace() {
    for db in [
        TestDb::new("pgi_planner_errors_plain"),
        TestDb::preloaded("pgi_planner_errors_preload"),
    ] {
        let mut c = db.client();
        c.batch_execute(
            "CREATE DOMAIN dpos AS int CHECK (VALUE > 0);
             CREATE FUNCTION to_dpos(int) RETURNS dpos IMMUTABLE LANGUAGE sql AS 'SELECT $1::dpos';
             CREATE TABLE t (id int PRIMARY KEY, status text, sent_at timestamptz,
                             CONSTRAINT known CHECK (status IN ('sent', 'new')));
             INSERT INTO t VALUES (1, 'sent', NULL);
             SELECT invariants.require_not_null('t', 'sent_at', 'status', ARRAY['sent'],
                                                repair => '{\"set\": {\"status\": \"bogus\"}}');",
        )
        .unwrap();
        // Raised while the query is planned (constant folding of the
        // inlined SQL function).
        c.batch_execute(
            "CREATE FUNCTION pg_temp.fields(q text) RETURNS text LANGUAGE plpgsql AS $$
             DECLARE k text; d text; x text; BEGIN EXECUTE q; RETURN 'no error';
             EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS k = CONSTRAINT_NAME, d = PG_DATATYPE_NAME, x = PG_EXCEPTION_CONTEXT;
               RETURN k || '/' || d || '/' || (x LIKE '%SQL function \"to_dpos\"%')::text;
             END $$",
        )
        .unwrap();
        let fields: String = c
            .query_one("SELECT pg_temp.fields('SELECT to_dpos(-1)')", &[])
            .unwrap()
            .get(0);
        assert_eq!(fields, "dpos_check/dpos/true", "{}", db.name);
        // An error pgrx raises again (a statement the extension runs) carries
        // no Rust backtrace, whatever RUST_BACKTRACE holds (scripts/test
        // starts the clusters with RUST_BACKTRACE=1).
        let error = c.query("SELECT * FROM invariants.repair('t')", &[]).unwrap_err();
        let error = error.as_db_error().expect("a server error");
        assert_eq!(error.constraint(), Some("known"));
        let text = format!("{:?} {:?} {:?}", error.detail(), error.hint(), error.where_());
        assert!(
            !text.contains("backtrace") && !text.contains("rust_begin_unwind"),
            "{text}"
        );
    }
}
