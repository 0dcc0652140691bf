//! Rules and count rules that no session setting, rename or type can fool,
//! and errors exact everywhere: each case as a real client sees it.
use pg_invariants_client_tests::{fresh_role, one, sqlstate, TestDb};
use postgres::error::DbError;

fn db_error(result: Result<impl Sized, postgres::Error>) -> DbError {
    match result {
        Ok(_) => panic!("expected the statement to fail"),
        Err(e) => e
            .as_db_error()
            .cloned()
            .unwrap_or_else(|| panic!("not a server error: {e}")),
    }
}

#[test]
fn no_session_setting_changes_a_verdict() {
    let db = TestDb::new("pgi_exact_settings");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE ev (id int PRIMARY KEY, day date, at timestamptz, span interval, ratio float8, note text);
         SELECT invariants.require_not_null('ev', 'note', 'day', ARRAY['2026-11-30'], name => 'by_day');
         SELECT invariants.require_not_null('ev', 'note', 'at', ARRAY['2026-11-30 10:00:00+00'], name => 'by_at');
         SELECT invariants.require_not_null('ev', 'note', 'span', ARRAY['1 day 02:00:00'], name => 'by_span');
         SELECT invariants.require_not_null('ev', 'note', 'ratio', ARRAY['0.1'], name => 'by_ratio');
         -- The rules trigger runs once in this session before the settings change.
         INSERT INTO ev VALUES (1, '2026-11-29', NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    let settings = [
        "SET DateStyle = 'German'",
        "SET DateStyle = 'SQL, DMY'",
        "SET TimeZone = 'Pacific/Chatham'",
        "SET IntervalStyle = 'sql_standard'",
        "SET IntervalStyle = 'iso_8601'",
        "SET extra_float_digits = -15",
        "SET lc_monetary = 'C'",
    ];
    let breaking = [
        ("by_day", "INSERT INTO ev (id, day) VALUES (2, '2026-11-30')"),
        (
            "by_at",
            "INSERT INTO ev (id, at) VALUES (3, '2026-11-30 23:45:00+13:45')",
        ),
        (
            "by_span",
            "INSERT INTO ev (id, span) VALUES (4, interval '26 hours' - interval '1 day' + interval '1 day')",
        ),
        ("by_ratio", "INSERT INTO ev (id, ratio) VALUES (5, 0.1)"),
    ];
    for setting in settings {
        c.batch_execute(setting).unwrap();
        for (rule, insert) in breaking {
            let error = db_error(c.batch_execute(insert));
            assert_eq!(error.code().code(), "23514", "{setting}: {insert}");
            assert_eq!(error.constraint(), Some(rule), "{setting}: {insert}");
        }
        c.batch_execute("RESET ALL").unwrap();
    }
    // Detection agrees, whatever the settings.
    c.batch_execute(
        "BEGIN; SET LOCAL invariants.allow_drop = on; ALTER TABLE ev DISABLE TRIGGER invariants_rules;
         INSERT INTO ev (id, day, at, span, ratio) VALUES (6, '2026-11-30', '2026-11-30 10:00+00', '1 day 2 hours', 0.1);
         ALTER TABLE ev ENABLE TRIGGER invariants_rules; COMMIT;",
    )
    .unwrap();
    for setting in settings {
        c.batch_execute(setting).unwrap();
        assert_eq!(
            one(&mut c, "SELECT sum(violating)::bigint FROM invariants.violations('ev')"),
            4,
            "{setting}"
        );
        c.batch_execute("RESET ALL").unwrap();
    }
}

#[test]
fn a_rule_on_a_generated_column_is_refused_at_declaration() {
    let db = TestDb::new("pgi_exact_generated");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE g (id int PRIMARY KEY, status text, tracking text,
                         shipped boolean GENERATED ALWAYS AS (status = 'shipped') STORED)",
    )
    .unwrap();
    let error =
        db_error(c.batch_execute("SELECT invariants.require_not_null('g', 'tracking', 'shipped', ARRAY['true'])"));
    assert_eq!(error.code().code(), "0A000");
    assert!(error.message().contains("generated column"), "{error:?}");
    assert_eq!(one(&mut c, "SELECT count(*) FROM invariants.rules"), 0);
    // Declared on the column it is computed from, it holds.
    c.batch_execute("SELECT invariants.require_not_null('g', 'tracking', 'status', ARRAY['shipped'])")
        .unwrap();
    assert_eq!(
        sqlstate(c.batch_execute("INSERT INTO g (id, status) VALUES (1, 'shipped')")),
        "23514"
    );
}

#[test]
fn renaming_tables_or_columns_turns_no_count_rule_off() {
    let db = TestDb::new("pgi_exact_renames");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE batch (id int PRIMARY KEY, total int NOT NULL DEFAULT 0);
         CREATE TABLE item (id serial PRIMARY KEY, batch_id int REFERENCES batch);
         SELECT invariants.require_count('batch', 'total', 'item', 'batch_id');
         ALTER TABLE item RENAME TO item2;
         ALTER TABLE batch RENAME TO batch2;
         ALTER TABLE batch2 RENAME COLUMN total TO claimed;
         ALTER TABLE item2 RENAME COLUMN batch_id TO parent;",
    )
    .unwrap();
    let error = db_error(c.batch_execute("INSERT INTO batch2 VALUES (1, 100)"));
    assert_eq!(error.code().code(), "23514");
    assert_eq!(error.table(), Some("batch2"));
    assert_eq!(one(&mut c, "SELECT count(*) FROM batch2"), 0);
    c.batch_execute("BEGIN; INSERT INTO batch2 VALUES (1, 2); INSERT INTO item2 (parent) VALUES (1), (1); COMMIT;")
        .unwrap();
    assert_eq!(sqlstate(c.batch_execute("DELETE FROM item2 WHERE id = 1")), "23514");
    assert_eq!(
        one(
            &mut c,
            "SELECT count(*) FROM invariants.lint() WHERE severity = 'error'"
        ),
        0
    );
}

#[test]
fn count_rule_keys_of_other_types_are_refused_at_declaration() {
    let db = TestDb::new("pgi_exact_count_types");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE p (id int PRIMARY KEY, total int, code text UNIQUE);
         CREATE TABLE ch (id int PRIMARY KEY, p_text text, a int, b int);",
    )
    .unwrap();
    // A text column against an int key.
    let error = db_error(c.batch_execute("SELECT invariants.require_count('p', 'total', 'ch', 'p_text')"));
    assert_eq!(error.code().code(), "42804", "{error:?}");
    // Two columns against a one-column key.
    let error = db_error(c.batch_execute("SELECT invariants.require_count('p', 'total', 'ch', 'a, b')"));
    assert_eq!(error.code().code(), "42830", "{error:?}");
    assert_eq!(one(&mut c, "SELECT count(*) FROM invariants.rules"), 0);
    // Nothing left behind: writes and health still work.
    c.batch_execute("INSERT INTO p VALUES (1, 0, 'x'); INSERT INTO ch VALUES (1, 'x', 1, 1);")
        .unwrap();
    c.query_one("SELECT invariants.health()", &[]).unwrap();
}

#[test]
fn count_rules_from_parents_with_long_names_get_their_own_triggers() {
    let db = TestDb::new("pgi_exact_long_names");
    let mut c = db.client();
    let a = "parent_with_a_very_long_name_that_fills_the_identifier_limit_a";
    let b = "parent_with_a_very_long_name_that_fills_the_identifier_limit_b";
    c.batch_execute(&format!(
        "CREATE TABLE {a} (id int PRIMARY KEY, total int NOT NULL DEFAULT 0);
         CREATE TABLE {b} (id int PRIMARY KEY, total int NOT NULL DEFAULT 0);
         CREATE TABLE child (id serial PRIMARY KEY, a_id int REFERENCES {a}, b_id int REFERENCES {b});
         SELECT invariants.require_count('{a}', 'total', 'child', 'a_id', name => '{a}_total');
         SELECT invariants.require_count('{b}', 'total', 'child', 'b_id', name => '{b}_total');"
    ))
    .unwrap();
    assert_eq!(
        one(&mut c, "SELECT count(DISTINCT tgname) FROM pg_trigger WHERE tgrelid = 'child'::regclass AND tgname LIKE 'invariants_%'"),
        2
    );
    assert_eq!(
        sqlstate(c.batch_execute(&format!("INSERT INTO {a} VALUES (1, 1)"))),
        "23514"
    );
    assert_eq!(
        sqlstate(c.batch_execute(&format!("INSERT INTO {b} VALUES (1, 1)"))),
        "23514"
    );
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO {a} VALUES (1, 1); INSERT INTO {b} VALUES (1, 1);
         INSERT INTO child (a_id, b_id) VALUES (1, 1); COMMIT;"
    ))
    .unwrap();
}

#[test]
fn deep_json_and_unknown_tables_get_their_own_sqlstates() {
    let db = TestDb::new("pgi_exact_json");
    let mut c = db.client();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, status text, sent_at timestamptz)")
        .unwrap();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let calls = [
        format!("SELECT invariants.add_rule('t', 'r', 'require_not_null', '{{\"column\": {deep}}}')"),
        format!("SELECT invariants.allow_transitions('t', 'status', '{{\"a\": {deep}}}')"),
        format!(
            "SELECT invariants.require_not_null('t', 'sent_at', 'status', ARRAY['sent'], repair => '{{\"set\": {deep}}}')"
        ),
    ];
    for sql in &calls {
        let error = db_error(c.batch_execute(sql));
        assert_eq!(error.code().code(), "22023", "{sql}");
        assert!(error.message().starts_with("argument "), "{error:?}");
    }
    let error = db_error(c.batch_execute(
        "SELECT invariants.add_rule('t', 'c', 'require_count',
                '{\"count_column\": \"id\", \"child\": \"no_such_table\", \"fk_columns\": [\"x\"]}')",
    ));
    assert_eq!(error.code().code(), "42P01", "{error:?}");
    assert_eq!(one(&mut c, "SELECT count(*) FROM invariants.rules"), 0);
}

#[test]
fn detection_needs_only_select_and_reports_rows_in_key_order() {
    let db = TestDb::new("pgi_exact_select");
    fresh_role("pgi_reader");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, status text, sent_at timestamptz);
         INSERT INTO t SELECT i, 'sent', NULL FROM generate_series(1, 50) i ORDER BY random();
         SELECT invariants.require_not_null('t', 'sent_at', 'status', ARRAY['sent'], name => 'r',
                                            repair => '{\"set\": {\"status\": \"new\"}}');
         GRANT SELECT ON t TO pgi_reader;
         GRANT EXECUTE ON FUNCTION invariants.prune_audit(interval) TO pgi_reader;",
    )
    .unwrap();
    let mut reader = db.client_as("pgi_reader");
    let violating: i64 = reader
        .query_one("SELECT violating FROM invariants.violations('t')", &[])
        .unwrap()
        .get(0);
    assert_eq!(violating, 50);
    let keys: Vec<String> = reader
        .query("SELECT key::text FROM invariants.violating_rows('t', 'r', 3)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["{\"id\": 1}", "{\"id\": 2}", "{\"id\": 3}"]);
    // Who pruned is who called, not the extension's owner.
    reader.query_one("SELECT invariants.prune_audit('1 day')", &[]).unwrap();
    let who: String = c
        .query_one("SELECT db_user FROM invariants.audit_log WHERE op = 'PRUNE'", &[])
        .unwrap()
        .get(0);
    assert_eq!(who, "pgi_reader");
}

#[test]
fn a_misspelt_setting_is_an_error() {
    let db = TestDb::new("pgi_exact_settings_names");
    let mut c = db.client();
    // Load the library in this session, as any use of the extension does.
    c.batch_execute("SELECT * FROM invariants.lint()").unwrap();
    let error = db_error(c.batch_execute("SET invariants.alow_drop = on"));
    assert_eq!(error.code().code(), "42602");
    assert!(error.message().contains("invariants.alow_drop"), "{error:?}");
    c.batch_execute("SET invariants.allow_drop = on").unwrap();
    // Preloaded, from the first statement of a session.
    let preloaded = TestDb::preloaded("pgi_exact_settings_preload");
    let mut p = preloaded.client();
    assert_eq!(sqlstate(p.batch_execute("SET invariants.alow_truncate = on")), "42602");
}

#[test]
fn errors_of_statements_the_extension_runs_keep_every_field() {
    let db = TestDb::new("pgi_exact_fields");
    let mut c = db.client();
    c.batch_execute(
        "CREATE DOMAIN positive AS int CHECK (VALUE > 0);
         CREATE TABLE t (id int PRIMARY KEY, status text, sent_at timestamptz, n positive,
                         CONSTRAINT status_known CHECK (status IN ('sent', 'new', 'open')));
         INSERT INTO t VALUES (1, 'sent', NULL, 1);
         -- repair sets a status the table's own CHECK refuses
         SELECT invariants.require_not_null('t', 'sent_at', 'status', ARRAY['sent'], name => 'sent_needs_time',
                                            repair => '{\"set\": {\"status\": \"bogus\"}}');",
    )
    .unwrap();
    let error = db_error(c.query("SELECT * FROM invariants.repair('t')", &[]));
    assert_eq!(error.code().code(), "23514");
    assert_eq!(error.constraint(), Some("status_known"));
    assert_eq!(error.table(), Some("t"));
    assert_eq!(error.schema(), Some("public"));
    assert!(error.where_().unwrap_or_default().contains("UPDATE"), "{error:?}");

    // Another rule refusing the repair's UPDATE: the rule's fields.
    c.batch_execute(
        "SELECT invariants.drop_rule('t', 'sent_needs_time');
         SELECT invariants.require_not_null('t', 'sent_at', 'status', ARRAY['sent'], name => 'sent_needs_time',
                                            repair => '{\"set\": {\"status\": \"open\"}}');
         SELECT invariants.write_once('t', 'status', mode => 'immutable', name => 'status_once');",
    )
    .unwrap();
    let error = db_error(c.query("SELECT * FROM invariants.repair('t')", &[]));
    assert_eq!(error.code().code(), "23514");
    assert_eq!(error.constraint(), Some("status_once"));
    assert_eq!(error.table(), Some("t"));

    // A domain CHECK in a restore: the datatype and constraint.
    c.batch_execute(
        "SELECT invariants.drop_rule('t', 'status_once');
         SELECT invariants.drop_rule('t', 'sent_needs_time');
         SELECT invariants.enable_audit('t');
         DELETE FROM t;
         ALTER DOMAIN positive ADD CONSTRAINT above_five CHECK (VALUE > 5) NOT VALID;",
    )
    .unwrap();
    let error = db_error(c.query("SELECT * FROM invariants.restore(tbl => 't')", &[]));
    assert_eq!(error.code().code(), "23514");
    assert_eq!(error.constraint(), Some("above_five"));
    assert_eq!(error.datatype(), Some("positive"));
    assert_eq!(one(&mut c, "SELECT count(*) FROM t"), 0);

    // The same fields reach PL/pgSQL's GET STACKED DIAGNOSTICS.
    let fields: String = c
        .query_one(
            "DO $$ DECLARE k text; d text; BEGIN
                 PERFORM * FROM invariants.restore(tbl => 't');
             EXCEPTION WHEN check_violation THEN
                 GET STACKED DIAGNOSTICS k = CONSTRAINT_NAME, d = PG_DATATYPE_NAME;
                 RAISE EXCEPTION USING MESSAGE = k || '/' || d;
             END $$",
            &[],
        )
        .map(|_| String::new())
        .unwrap_or_else(|e| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default());
    assert_eq!(fields, "above_five/positive");
}
