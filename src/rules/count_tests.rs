//! Tests of `require_count`. A `#[pg_test]` never commits, so the checks
//! COMMIT runs are run with `invariants.check_counts()`.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of};

    /// The incident's tables: a session claims how many prospects it has.
    fn sessions() {
        run("CREATE TABLE import_sessions (id int PRIMARY KEY, total_prospects int NOT NULL DEFAULT 0)");
        run("CREATE TABLE prospects (id serial PRIMARY KEY,
                                      session_id int REFERENCES import_sessions ON DELETE CASCADE, name text)");
        run("CREATE INDEX ON prospects (session_id)");
        run("SELECT invariants.require_count('import_sessions', 'total_prospects', 'prospects', 'session_id')");
    }

    /// Runs `sql` and the checks COMMIT would run.
    fn commit(sql: &str) {
        run(&format!("{sql}; SELECT invariants.check_counts()"));
    }

    fn commit_check(sql: &str) -> Option<crate::testing::CaughtError> {
        error_of(&format!(
            "DO $d$ BEGIN {sql}; PERFORM invariants.check_counts(); END $d$"
        ))
    }

    #[pg_test]
    fn a_claim_without_rows_is_refused_at_commit() {
        sessions();
        let error = commit_check("INSERT INTO import_sessions VALUES (1, 100)").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(error.constraint, "total_prospects_counts_prospects");
        assert_eq!(error.table, "import_sessions");
        assert!(
            error
                .detail
                .contains("Key (id)=(1) claims total_prospects = 100, but public.prospects holds 0 rows"),
            "{error:?}"
        );
        assert_eq!(count("SELECT count(*) FROM import_sessions"), 0);
    }

    #[pg_test]
    fn rows_without_a_claim_are_refused_and_both_together_pass() {
        sessions();
        commit("INSERT INTO import_sessions VALUES (1, 0)");
        let error =
            commit_check("INSERT INTO prospects (session_id) SELECT 1 FROM generate_series(1, 3)").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert!(
            error
                .detail
                .contains("claims total_prospects = 0, but public.prospects holds 3 rows"),
            "{error:?}"
        );
        assert_eq!(count("SELECT count(*) FROM prospects"), 0);
        commit(
            "INSERT INTO prospects (session_id) SELECT 1 FROM generate_series(1, 3);
             UPDATE import_sessions SET total_prospects = 3 WHERE id = 1",
        );
        commit("INSERT INTO import_sessions VALUES (2, 2); INSERT INTO prospects (session_id) VALUES (2), (2)");
        assert_eq!(count("SELECT count(*) FROM prospects"), 5);
        // A later wrong change in the same transaction is checked again.
        assert_eq!(
            sqlstate_of(
                "DO $d$ BEGIN DELETE FROM prospects WHERE session_id = 2; PERFORM invariants.check_counts(); END $d$"
            ),
            "23514"
        );
    }

    #[pg_test]
    fn a_bulk_import_checks_each_parent_once() {
        sessions();
        run("INSERT INTO import_sessions VALUES (1, 10000), (2, 5)");
        let scans = || count("SELECT pg_stat_get_xact_numscans('prospects_session_id_idx'::regclass)");
        let before = scans();
        commit(
            "INSERT INTO prospects (session_id) SELECT 1 FROM generate_series(1, 10000);
             INSERT INTO prospects (session_id) SELECT 2 FROM generate_series(1, 5)",
        );
        assert_eq!(scans() - before, 2, "one count query per parent");
        assert_eq!(count("SELECT count(*) FROM prospects"), 10005);
    }

    #[pg_test]
    fn children_moved_between_parents_and_parents_deleted() {
        sessions();
        commit(
            "INSERT INTO import_sessions VALUES (1, 2), (2, 1);
             INSERT INTO prospects (id, session_id) VALUES (1, 1), (2, 1), (3, 2)",
        );
        let error = commit_check("UPDATE prospects SET session_id = 2 WHERE id = 1").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        commit(
            "UPDATE prospects SET session_id = 2 WHERE id = 1;
             UPDATE import_sessions SET total_prospects = total_prospects + CASE id WHEN 2 THEN 1 ELSE -1 END",
        );
        // Deleting a parent (its children cascade) leaves nothing to check.
        commit("DELETE FROM import_sessions WHERE id = 2");
        assert_eq!(count("SELECT count(*) FROM prospects"), 1);
    }

    #[pg_test]
    fn composite_and_text_keys() {
        run("CREATE TABLE batches (tenant text, code uuid, expected bigint, PRIMARY KEY (tenant, code))");
        run(
            "CREATE TABLE lines (id int PRIMARY KEY, batch_tenant text, batch_code uuid,
                                  FOREIGN KEY (batch_tenant, batch_code) REFERENCES batches)",
        );
        run("SELECT invariants.require_count('batches', 'expected', 'lines', 'batch_code, batch_tenant', 'lines_counted')");
        commit(
            "INSERT INTO batches VALUES ('acme', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2);
             INSERT INTO lines VALUES (1, 'acme', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
                                      (2, 'acme', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
        );
        let error = commit_check("DELETE FROM lines WHERE id = 2").expect("refused");
        assert!(
            error
                .detail
                .contains("Key (code, tenant)=(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11, acme) claims expected = 2, but public.lines holds 1 rows"),
            "{error:?}"
        );
    }

    #[pg_test]
    fn violations_and_violating_rows_report_existing_mismatches() {
        run("CREATE TABLE s (id int PRIMARY KEY, total int)");
        run("CREATE TABLE p (id int PRIMARY KEY, s_id int REFERENCES s)");
        run("INSERT INTO s VALUES (1, 100), (2, 0), (3, 1); INSERT INTO p VALUES (1, 3)");
        run("SELECT invariants.require_count('s', 'total', 'p', 's_id')");
        assert_eq!(count("SELECT violating FROM invariants.violations('s')"), 1);
        assert_eq!(count("SELECT total FROM invariants.violations('s')"), 3);
        assert_eq!(
            count("SELECT (key->>'id')::bigint FROM invariants.violating_rows('s', 'total_counts_p')"),
            1
        );
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(health["rows"]["violating"], 1);
    }

    #[pg_test]
    fn drop_rule_removes_both_triggers() {
        sessions();
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'invariants_count%'"),
            2
        );
        run("SELECT invariants.drop_rule('import_sessions', 'total_prospects_counts_prospects')");
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'invariants_count%'"),
            0
        );
        commit("INSERT INTO import_sessions VALUES (1, 100)");
    }

    #[pg_test]
    fn require_count_bad_arguments() {
        run("CREATE TABLE s (id int PRIMARY KEY, total int, label text)");
        run("CREATE TABLE p (id int PRIMARY KEY, s_id int REFERENCES s, other int)");
        run("CREATE TABLE lone (a int, b int)");
        let cases = [
            ("SELECT invariants.require_count('nope', 'total', 'p', 's_id')", "42P01"),
            ("SELECT invariants.require_count('s', 'total', 'nope', 's_id')", "42P01"),
            ("SELECT invariants.require_count(NULL, 'total', 'p', 's_id')", "22004"),
            ("SELECT invariants.require_count('s', NULL, 'p', 's_id')", "22004"),
            ("SELECT invariants.require_count('s', 'total', 'p', NULL)", "22004"),
            ("SELECT invariants.require_count('s', 'nope', 'p', 's_id')", "42703"),
            ("SELECT invariants.require_count('s', 'label', 'p', 's_id')", "42804"),
            ("SELECT invariants.require_count('s', 'total', 'p', 'nope')", "42703"),
            ("SELECT invariants.require_count('s', 'total', 'p', ' , ')", "22023"),
            ("SELECT invariants.require_count('lone', 'a', 'p', 's_id')", "42830"),
            (
                "SELECT invariants.add_rule('s', 'r', 'require_count', '{\"count_column\": \"total\"}')",
                "22023",
            ),
        ];
        for (sql, expected) in cases {
            let error = error_of(sql).unwrap_or_else(|| panic!("expected {expected} from {sql}"));
            assert_eq!(error.sqlstate, expected, "{sql}: {error:?}");
        }
        run("SELECT invariants.require_count('s', 'total', 'p', 's_id')");
        assert_eq!(
            sqlstate_of("SELECT invariants.require_count('s', 'total', 'p', 's_id')"),
            "42710"
        );
        assert_eq!(count("SELECT count(*) FROM invariants.rules"), 1);
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'invariants_count%'"),
            2
        );
    }

    #[pg_test]
    fn partitioned_parents_and_children_and_the_general_form() {
        run(
            "CREATE TABLE sess (id int, region text, total int NOT NULL DEFAULT 0, PRIMARY KEY (id, region))
             PARTITION BY LIST (region)",
        );
        run("CREATE TABLE sess_eu PARTITION OF sess FOR VALUES IN ('eu')");
        run(
            "CREATE TABLE pros (id int, region text, sess_id int, PRIMARY KEY (id, region),
                                 FOREIGN KEY (sess_id, region) REFERENCES sess) PARTITION BY LIST (region)",
        );
        run("CREATE TABLE pros_eu PARTITION OF pros FOR VALUES IN ('eu')");
        run(r#"SELECT invariants.add_rule('sess', 'pros_counted', 'require_count',
                 '{"count_column": "total", "child": "pros", "fk_column": "sess_id, region"}')"#);
        commit("INSERT INTO sess VALUES (1, 'eu', 1); INSERT INTO pros VALUES (1, 'eu', 1)");
        let error = commit_check("INSERT INTO sess VALUES (2, 'eu', 2); INSERT INTO pros VALUES (2, 'eu', 2)")
            .expect("refused");
        assert_eq!(error.constraint, "pros_counted");
        assert!(
            error.detail.contains("Key (id, region)=(2, eu) claims total = 2"),
            "{error:?}"
        );
        assert_eq!(count("SELECT count(*) FROM sess"), 1);
    }
}
