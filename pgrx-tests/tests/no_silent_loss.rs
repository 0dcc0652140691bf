//! No silent loss: every way a row can leave a protected, audited or
//! soft-delete table is captured or refused, and what the owner's switch
//! lets through is recorded.
use pg_invariants_client_tests::{one, sqlstate, TestDb};
use postgres::Client;

/// Entries the log holds for a table, by op.
fn logged(c: &mut Client, table: &str, op: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM invariants.audit_log WHERE table_name = $1 AND op = $2",
        &[&table, &op],
    )
    .unwrap()
    .get(0)
}

fn lint_errors(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT object || ': ' || problem FROM invariants.lint() WHERE severity = 'error'",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn partitions_made_any_way_and_at_any_depth_are_covered() {
    let db = TestDb::new("pgi_loss_partitions");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE pr (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
         CREATE TABLE pr1 PARTITION OF pr FOR VALUES IN (1);
         SELECT invariants.protect('pr', max_delete_rows => 0);
         -- a partition made inside CREATE SCHEMA
         CREATE SCHEMA s CREATE TABLE p3 PARTITION OF public.pr FOR VALUES IN (3);
         -- a partition that is itself partitioned, its leaves made later
         CREATE TABLE pr2 PARTITION OF pr FOR VALUES IN (2) PARTITION BY RANGE (id);
         CREATE TABLE pr2_low PARTITION OF pr2 FOR VALUES FROM (0) TO (100);
         CREATE TABLE pr2_high (id int NOT NULL, k int NOT NULL);
         ALTER TABLE pr2 ATTACH PARTITION pr2_high FOR VALUES FROM (100) TO (1000);
         INSERT INTO pr SELECT i, 1 + i % 3 FROM generate_series(1, 120) i;",
    )
    .unwrap();
    for leaf in ["s.p3", "pr2_low", "pr2_high", "pr2"] {
        assert_eq!(
            sqlstate(c.batch_execute(&format!("TRUNCATE {leaf}"))),
            "55000",
            "{leaf}"
        );
    }
    c.batch_execute("DELETE FROM s.p3").unwrap();
    assert_eq!(logged(&mut c, "p3", "DELETE"), 40);
    c.batch_execute("DELETE FROM pr2_high").unwrap();
    assert_eq!(logged(&mut c, "pr2_high", "DELETE"), 7);
    assert_eq!(lint_errors(&mut c), Vec::<String>::new());
    let health: String = c
        .query_one("SELECT invariants.health()->>'protections'", &[])
        .unwrap()
        .get(0);
    assert_eq!(health, "[]");
    // A partition dropped directly is a drop of part of the protected table.
    assert_eq!(sqlstate(c.batch_execute("DROP TABLE pr2_low")), "55000");
    assert_eq!(sqlstate(c.batch_execute("DROP SCHEMA s CASCADE")), "55000");
}

#[test]
fn inheritance_children_are_covered() {
    let db = TestDb::new("pgi_loss_inheritance");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE ip (id int PRIMARY KEY, deleted_at timestamptz);
         SELECT invariants.enable_soft_delete('ip');
         CREATE TABLE ic () INHERITS (ip);
         INSERT INTO ip VALUES (1); INSERT INTO ic VALUES (2);
         CREATE TABLE ap (id int PRIMARY KEY);
         SELECT invariants.protect('ap');
         CREATE TABLE ac (note text) INHERITS (ap);
         INSERT INTO ap VALUES (1); INSERT INTO ac VALUES (2, 'x'), (3, 'y');",
    )
    .unwrap();
    // Soft delete through the parent keeps the child's row.
    c.batch_execute("DELETE FROM ip").unwrap();
    assert_eq!(one(&mut c, "SELECT count(*) FROM ip WHERE deleted_at IS NOT NULL"), 2);
    assert_eq!(one(&mut c, "SELECT count(*) FROM ic WHERE deleted_at IS NOT NULL"), 1);
    // The protected parent's child is guarded and audited: a DELETE on the
    // child itself is recorded as the child's, one through the parent as
    // the parent's (Postgres gives the parent's trigger the child's rows in
    // the parent's columns).
    assert_eq!(sqlstate(c.batch_execute("TRUNCATE ac")), "55000");
    c.batch_execute("DELETE FROM ac WHERE id = 2").unwrap();
    assert_eq!(logged(&mut c, "ac", "DELETE"), 1);
    c.batch_execute("DELETE FROM ap WHERE id = 3").unwrap();
    assert_eq!(logged(&mut c, "ap", "DELETE"), 1);
    assert_eq!(sqlstate(c.batch_execute("ALTER TABLE ac NO INHERIT ap")), "55000");
    assert_eq!(lint_errors(&mut c), Vec::<String>::new());
}

#[test]
fn the_extensions_triggers_cannot_be_renamed_replaced_disabled_or_dropped() {
    let db = TestDb::new("pgi_loss_triggers");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, status text, done_at timestamptz);
         INSERT INTO a SELECT generate_series(1, 87);
         SELECT invariants.enable_audit('a');
         SELECT invariants.require_not_null('a', 'done_at', 'status', ARRAY['done']);
         CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;",
    )
    .unwrap();
    let attempts = [
        "ALTER TRIGGER invariants_audit_delete ON a RENAME TO x",
        "ALTER TRIGGER invariants_rules ON a RENAME TO y",
        "DROP TRIGGER invariants_truncate ON a",
        "DROP TRIGGER invariants_rules ON a",
        "ALTER TABLE a DISABLE TRIGGER invariants_audit_delete",
        "ALTER TABLE a DISABLE TRIGGER ALL",
        "ALTER TABLE a DISABLE TRIGGER USER",
        "ALTER TABLE a ENABLE ALWAYS TRIGGER invariants_truncate",
        "ALTER TABLE a ENABLE REPLICA TRIGGER invariants_audit_delete",
    ];
    for sql in attempts {
        assert_eq!(sqlstate(c.batch_execute(sql)), "55000", "{sql}");
    }
    // Replacing one: refused (by Postgres itself when the definition is
    // one it will not replace in place).
    let replacements = [
        "CREATE OR REPLACE TRIGGER invariants_truncate BEFORE TRUNCATE ON a FOR EACH STATEMENT EXECUTE FUNCTION nothing()",
        "CREATE OR REPLACE TRIGGER invariants_audit_delete AFTER INSERT ON a FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_delete()",
        "CREATE OR REPLACE TRIGGER invariants_rules BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION nothing()",
    ];
    for sql in replacements {
        assert!(c.batch_execute(sql).is_err(), "{sql}");
    }
    // Nothing changed: TRUNCATE is still captured.
    c.batch_execute("TRUNCATE a").unwrap();
    assert_eq!(logged(&mut c, "a", "TRUNCATE"), 87);
    // The owner's switch lets one through, and it is recorded.
    c.batch_execute(
        "BEGIN; SET LOCAL invariants.allow_drop = on;
         ALTER TABLE a DISABLE TRIGGER invariants_audit_delete; COMMIT;",
    )
    .unwrap();
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM invariants.audit_log WHERE op = 'DROP' AND row_data->>'object_type' LIKE 'disabled trigger%'"),
        1
    );
    assert_eq!(lint_errors(&mut c).len(), 1, "lint reports the disabled trigger");
    c.batch_execute("SELECT invariants.reinstall_triggers('a')").unwrap();
    assert_eq!(lint_errors(&mut c), Vec::<String>::new());
}

#[test]
fn column_rewrites_unlogged_and_detach_are_refused_unless_allowed() {
    let db = TestDb::new("pgi_loss_ddl");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE b (id int PRIMARY KEY, secret text);
         INSERT INTO b VALUES (1, 'kept');
         SELECT invariants.protect('b');
         CREATE TABLE u (id int PRIMARY KEY);
         SELECT invariants.enable_audit('u');
         CREATE TABLE pr (id int, k int, deleted_at timestamptz) PARTITION BY LIST (k);
         CREATE TABLE pr2 PARTITION OF pr FOR VALUES IN (2);
         INSERT INTO pr VALUES (1, 2);
         SELECT invariants.enable_soft_delete('pr');",
    )
    .unwrap();
    assert_eq!(
        sqlstate(c.batch_execute("ALTER TABLE b ALTER COLUMN secret TYPE text USING NULL")),
        "55000"
    );
    assert_eq!(
        sqlstate(c.batch_execute("ALTER TABLE b ALTER COLUMN id TYPE bigint")),
        "55000"
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM b WHERE secret = 'kept'"), 1);
    assert_eq!(sqlstate(c.batch_execute("ALTER TABLE u SET UNLOGGED")), "55000");
    assert_eq!(sqlstate(c.batch_execute("ALTER TABLE b SET UNLOGGED")), "55000");
    assert_eq!(
        sqlstate(c.batch_execute("ALTER TABLE pr DETACH PARTITION pr2")),
        "55000"
    );
    assert_eq!(
        sqlstate(c.batch_execute("CREATE UNLOGGED TABLE pr3 PARTITION OF pr FOR VALUES IN (3)")),
        "55000"
    );
    // Allowed by the owner: done, and recorded.
    c.batch_execute(
        "BEGIN; SET LOCAL invariants.allow_drop = on;
         ALTER TABLE b ALTER COLUMN secret TYPE varchar(20);
         ALTER TABLE pr DETACH PARTITION pr2; COMMIT;",
    )
    .unwrap();
    assert_eq!(logged(&mut c, "b", "DROP"), 1);
    assert_eq!(logged(&mut c, "pr", "DROP"), 1);
}

#[test]
fn truncate_of_a_soft_delete_table_is_refused_in_both_modes() {
    for preloaded in [false, true] {
        let name = if preloaded {
            "pgi_loss_truncate_pre"
        } else {
            "pgi_loss_truncate"
        };
        let db = if preloaded {
            TestDb::preloaded(name)
        } else {
            TestDb::new(name)
        };
        let mut c = db.client();
        c.batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, deleted_at timestamptz);
             CREATE TABLE notes (id int PRIMARY KEY, user_id int REFERENCES users, deleted_at timestamptz);
             INSERT INTO users VALUES (1), (2); INSERT INTO notes VALUES (1, 1);
             SELECT invariants.enable_soft_delete('users');
             SELECT invariants.enable_soft_delete('notes');
             SELECT invariants.enable_audit('notes');",
        )
        .unwrap();
        assert_eq!(sqlstate(c.batch_execute("TRUNCATE notes")), "55000");
        c.batch_execute("ALTER TABLE notes DROP CONSTRAINT notes_user_id_fkey")
            .unwrap();
        assert_eq!(sqlstate(c.batch_execute("TRUNCATE users")), "55000");
        c.batch_execute("ALTER TABLE notes ADD FOREIGN KEY (user_id) REFERENCES users")
            .unwrap();
        assert_eq!(sqlstate(c.batch_execute("TRUNCATE users CASCADE")), "55000");
        assert_eq!(
            one(&mut c, "SELECT count(*) FROM users") + one(&mut c, "SELECT count(*) FROM notes"),
            3
        );
        // Allowed by the owner: the audited table's rows are copied, the
        // other's TRUNCATE is recorded.
        c.batch_execute("BEGIN; SET LOCAL invariants.allow_truncate = on; TRUNCATE users CASCADE; COMMIT")
            .unwrap();
        assert_eq!(logged(&mut c, "notes", "TRUNCATE"), 1);
        assert_eq!(logged(&mut c, "users", "DROP"), 1);
    }
}

#[test]
fn a_row_moved_between_partitions_of_a_soft_delete_table_moves() {
    for preloaded in [false, true] {
        let name = if preloaded {
            "pgi_loss_move_pre"
        } else {
            "pgi_loss_move"
        };
        let db = if preloaded {
            TestDb::preloaded(name)
        } else {
            TestDb::new(name)
        };
        let mut c = db.client();
        c.batch_execute(
            "CREATE TABLE sp (id int, k int, deleted_at timestamptz, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
             CREATE TABLE sp1 PARTITION OF sp FOR VALUES IN (1);
             CREATE TABLE sp2 PARTITION OF sp FOR VALUES IN (2);
             INSERT INTO sp VALUES (1, 1), (2, 1);
             SELECT invariants.enable_soft_delete('sp');",
        )
        .unwrap();
        c.batch_execute("BEGIN").unwrap();
        let moved = c.execute("UPDATE sp SET k = 2 WHERE id = 1", &[]).unwrap();
        assert_eq!(moved, 1);
        c.batch_execute("DELETE FROM sp WHERE id = 2; COMMIT").unwrap();
        assert_eq!(
            one(&mut c, "SELECT count(*) FROM sp2 WHERE id = 1 AND deleted_at IS NULL"),
            1
        );
        assert_eq!(one(&mut c, "SELECT count(*) FROM sp1 WHERE id = 1"), 0);
        assert_eq!(
            one(
                &mut c,
                "SELECT count(*) FROM sp WHERE id = 2 AND deleted_at IS NOT NULL"
            ),
            1
        );
    }
}

#[test]
fn merge_deletes_are_captured_and_soft_deleted() {
    let db = TestDb::new("pgi_loss_merge");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, v int);
         INSERT INTO m SELECT generate_series(1, 5), 0;
         SELECT invariants.enable_audit('m');
         CREATE TABLE sm (id int PRIMARY KEY, deleted_at timestamptz);
         INSERT INTO sm SELECT generate_series(1, 5);
         SELECT invariants.enable_soft_delete('sm');
         MERGE INTO m USING generate_series(1, 3) g(i) ON m.id = g.i WHEN MATCHED THEN DELETE;
         MERGE INTO sm USING generate_series(1, 3) g(i) ON sm.id = g.i WHEN MATCHED THEN DELETE;",
    )
    .unwrap();
    assert_eq!(logged(&mut c, "m", "DELETE"), 3);
    assert_eq!(one(&mut c, "SELECT count(*) FROM sm WHERE deleted_at IS NOT NULL"), 3);
    assert_eq!(one(&mut c, "SELECT count(*) FROM sm"), 5);
}

#[test]
fn publisher_settings_that_turn_protection_off_are_reported() {
    let db = TestDb::new("pgi_loss_replication");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY);
         SELECT invariants.protect('t');
         CREATE PUBLICATION everything FOR ALL TABLES;
         ALTER DATABASE pgi_loss_replication SET session_replication_role = replica;",
    )
    .unwrap();
    let findings: Vec<String> = c
        .query("SELECT object FROM invariants.lint() ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        findings.contains(&"database pgi_loss_replication".to_string()),
        "{findings:?}"
    );
    assert!(findings.contains(&"publication everything".to_string()), "{findings:?}");
    c.batch_execute(
        "ALTER DATABASE pgi_loss_replication RESET session_replication_role;
         DROP PUBLICATION everything;
         CREATE PUBLICATION partial FOR TABLE t, invariants.audit_rows;",
    )
    .unwrap();
    // The fix lint gives for a publication that lists the log works.
    let fix: String = c
        .query_one(
            "SELECT fix FROM invariants.lint() WHERE object = 'publication partial'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fix, "ALTER PUBLICATION \"partial\" DROP TABLE invariants.audit_rows;");
    c.batch_execute(&fix).unwrap();
    assert_eq!(one(&mut c, "SELECT count(*) FROM invariants.lint()"), 0);
    assert_eq!(
        one(
            &mut c,
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'partial'"
        ),
        1
    );
    // A session in replica mode still cannot drop or disable the guards.
    c.batch_execute("SET session_replication_role = replica").unwrap();
    assert_eq!(sqlstate(c.batch_execute("DROP TABLE t")), "55000");
    assert_eq!(sqlstate(c.batch_execute("ALTER TABLE t DISABLE TRIGGER ALL")), "55000");
}

/// Deletes every row of a keyless table in one transaction; its txid.
fn keyless_loss(c: &mut Client, table: &str, rows: i32) -> String {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (v int, note text);
         INSERT INTO {table} SELECT i, 'n' || i FROM generate_series(1, {rows}) i;
         SELECT invariants.enable_audit('{table}');"
    ))
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("DELETE FROM {table}")).unwrap();
    let txid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    txid
}

#[test]
fn concurrent_restores_of_the_same_loss_restore_each_row_once() {
    let db = TestDb::new("pgi_loss_concurrent_restore");
    let mut c = db.client();
    let txid = keyless_loss(&mut c, "bag", 100);

    // The first restore holds its transaction open while a second session
    // restores the same transaction.
    let mut first = db.client();
    let mut first_tx = first.transaction().unwrap();
    let restored: i64 = first_tx
        .query_one("SELECT restored FROM invariants.restore($1::text::xid8)", &[&txid])
        .unwrap()
        .get(0);
    assert_eq!(restored, 100);
    let second = {
        let (name, txid) = (db.name.clone(), txid.clone());
        let port = db.port;
        std::thread::spawn(move || {
            let mut second = pg_invariants_client_tests::connect_on(port, &name, "postgres");
            let row = second
                .query_one(
                    "SELECT restored, problem FROM invariants.restore($1::text::xid8)",
                    &[&txid],
                )
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, Option<String>>(1))
        })
    };
    // Let the second session reach its wait on the first.
    let waiting = "SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..200 {
        if one(&mut c, waiting) > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(one(&mut c, waiting), 1, "the second restore waits for the first");
    first_tx.commit().unwrap();
    let (again, problem) = second.join().unwrap();
    assert_eq!(again, 0);
    assert!(problem.unwrap_or_default().contains("another transaction"));
    assert_eq!(one(&mut c, "SELECT count(*) FROM bag"), 100);
    assert_eq!(one(&mut c, "SELECT count(DISTINCT v) FROM bag"), 100);

    // At REPEATABLE READ the second one cannot see the first's claim in
    // its snapshot: it fails with a serialization error instead.
    let txid = keyless_loss(&mut c, "bag2", 10);
    let mut early = db.client();
    let mut early_tx = early
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    early_tx.query_one("SELECT 1", &[]).unwrap();
    c.query_one("SELECT restored FROM invariants.restore($1::text::xid8)", &[&txid])
        .unwrap();
    let late = early_tx.query("SELECT * FROM invariants.restore($1::text::xid8)", &[&txid]);
    assert_eq!(sqlstate(late), "40001");
    drop(early_tx);
    assert_eq!(one(&mut c, "SELECT count(*) FROM bag2"), 10);
}

#[test]
fn a_dropped_table_is_reported_and_the_others_are_restored() {
    let db = TestDb::new("pgi_loss_dropped_table");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE kept (id int PRIMARY KEY, v text);
         CREATE TABLE dropped (id int PRIMARY KEY, v text);
         INSERT INTO kept SELECT i, 'k' || i FROM generate_series(1, 5) i;
         INSERT INTO dropped SELECT i, 'd' || i FROM generate_series(1, 3) i;
         SELECT invariants.enable_audit('kept');
         SELECT invariants.enable_audit('dropped');",
    )
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("DELETE FROM kept; DELETE FROM dropped;").unwrap();
    let txid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    c.batch_execute("BEGIN; SET LOCAL invariants.allow_drop = on; DROP TABLE dropped; COMMIT;")
        .unwrap();

    let rows = c
        .query(
            "SELECT table_name, tbl IS NULL, restored, skipped, problem
               FROM invariants.restore($1::text::xid8) ORDER BY table_name",
            &[&txid],
        )
        .unwrap();
    let rows: Vec<(String, bool, i64, i64, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1, rows[0].2, rows[0].3),
        ("public.dropped", true, 0, 3)
    );
    assert!(
        rows[0].4.as_deref().unwrap_or_default().contains("no longer exists"),
        "{rows:?}"
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1, rows[1].2, rows[1].4.as_deref()),
        ("public.kept", false, 5, None)
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM kept"), 5);
    // restore(since) too reports it and goes on.
    c.batch_execute("DELETE FROM kept WHERE id = 1").unwrap();
    let since = c
        .query(
            "SELECT table_name, restored FROM invariants.restore(since => now() - interval '1 hour')
              ORDER BY table_name",
            &[],
        )
        .unwrap();
    assert_eq!(since.len(), 2);
    assert_eq!(since[1].get::<_, i64>(1), 1);

    // Created again with the same name and columns: restore by table puts
    // the rows back.
    c.batch_execute("CREATE TABLE dropped (id int PRIMARY KEY, v text)")
        .unwrap();
    let back: i64 = c
        .query_one("SELECT restored FROM invariants.restore(tbl => 'dropped')", &[])
        .unwrap()
        .get(0);
    assert_eq!(back, 3);
    assert_eq!(one(&mut c, "SELECT count(*) FROM dropped WHERE v LIKE 'd%'"), 3);
}
