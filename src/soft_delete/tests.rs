//! Tests of soft delete, purge and undelete.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of};

    /// users -> talent -> deal, each ON DELETE CASCADE, as in the incident.
    fn incident() {
        run("CREATE TABLE users (id int PRIMARY KEY, deleted_at timestamptz)");
        run("CREATE TABLE talent (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE, deleted_at timestamptz)");
        run(
            "CREATE TABLE deal (id int PRIMARY KEY, talent_id int REFERENCES talent ON DELETE CASCADE,
                                 amount numeric, deleted_at timestamptz)",
        );
        run("INSERT INTO users VALUES (1), (2)");
        run("INSERT INTO talent SELECT i, 1 + i % 2 FROM generate_series(1, 20) i");
        run("INSERT INTO deal SELECT i, 1 + i % 20, i FROM generate_series(1, 50) i");
        run("SELECT invariants.enable_soft_delete('users')");
    }

    #[pg_test]
    fn delete_becomes_soft_delete_and_cascades_three_levels() {
        incident();
        assert_eq!(count("SELECT count(*) FROM invariants.soft_delete_tables"), 3);
        run("DELETE FROM users WHERE id = 1");
        assert_eq!(
            count("SELECT count(*) FROM users")
                + count("SELECT count(*) FROM talent")
                + count("SELECT count(*) FROM deal"),
            72
        );
        assert_eq!(count("SELECT count(*) FROM users WHERE deleted_at = now()"), 1);
        assert_eq!(count("SELECT count(*) FROM talent WHERE deleted_at = now()"), 10);
        assert_eq!(count("SELECT count(*) FROM deal WHERE deleted_at = now()"), 25);
        assert_eq!(count("SELECT count(*) FROM deal WHERE deleted_at IS NULL"), 25);
        // A deleted row stays as it is: an UPDATE skips it, unless its owner
        // sets the switch (a repair by hand); DELETE changes nothing either.
        run("UPDATE users SET deleted_at = '2020-01-01' WHERE id = 1");
        assert_eq!(count("SELECT count(*) FROM users WHERE deleted_at = now()"), 1);
        run("SET LOCAL invariants.allow_undelete = on");
        run("UPDATE users SET deleted_at = '2020-01-01' WHERE id = 1");
        run("RESET invariants.allow_undelete");
        run("DELETE FROM users WHERE id = 1");
        assert_eq!(count("SELECT count(*) FROM users WHERE deleted_at = '2020-01-01'"), 1);
    }

    #[pg_test]
    fn many_rows_in_one_statement_and_a_self_referencing_table() {
        run("CREATE TABLE items (id int PRIMARY KEY, deleted_at timestamptz)");
        run("INSERT INTO items SELECT generate_series(1, 1000)");
        run("SELECT invariants.enable_soft_delete('items')");
        run("DELETE FROM items WHERE id <= 700");
        assert_eq!(count("SELECT count(*) FROM items WHERE deleted_at IS NOT NULL"), 700);
        assert_eq!(count("SELECT count(*) FROM items"), 1000);

        run("CREATE TABLE category (id int PRIMARY KEY, parent_id int REFERENCES category ON DELETE CASCADE, deleted_at timestamptz)");
        run("INSERT INTO category VALUES (1, NULL), (2, 1), (3, 2), (4, 3), (5, NULL)");
        run("SELECT invariants.enable_soft_delete('category')");
        run("DELETE FROM category WHERE id = 1");
        assert_eq!(count("SELECT count(*) FROM category WHERE deleted_at = now()"), 4);
        assert_eq!(
            count("SELECT count(*) FROM category WHERE id = 5 AND deleted_at IS NULL"),
            1
        );
    }

    #[pg_test]
    fn composite_foreign_keys_cascade() {
        run("CREATE TABLE orders (region text, no int, deleted_at timestamptz, PRIMARY KEY (region, no))");
        run(
            "CREATE TABLE lines (id int PRIMARY KEY, region text, no int, deleted_at timestamptz,
                                  FOREIGN KEY (region, no) REFERENCES orders ON DELETE CASCADE)",
        );
        run("INSERT INTO orders VALUES ('eu', 1), ('us', 1); INSERT INTO lines VALUES (1, 'eu', 1), (2, 'eu', 1), (3, 'us', 1)");
        run("SELECT invariants.enable_soft_delete('orders')");
        run("DELETE FROM orders WHERE region = 'eu'");
        assert_eq!(count("SELECT count(*) FROM lines WHERE deleted_at IS NOT NULL"), 2);
    }

    #[pg_test]
    fn a_hard_delete_cascading_into_a_soft_delete_table_fails_naming_both() {
        run("CREATE TABLE accounts (id int PRIMARY KEY)");
        run("CREATE TABLE notes (id int PRIMARY KEY, account_id int REFERENCES accounts ON DELETE CASCADE, deleted_at timestamptz)");
        run("INSERT INTO accounts VALUES (1); INSERT INTO notes VALUES (1, 1), (2, 1)");
        run("SELECT invariants.enable_soft_delete('notes')");
        let error = error_of("DELETE FROM accounts").expect("refused");
        assert_eq!(error.sqlstate, "23503");
        assert!(
            error.message.contains("public.accounts") && error.message.contains("public.notes"),
            "{error:?}"
        );
        assert_eq!(
            count("SELECT count(*) FROM accounts") + count("SELECT count(*) FROM notes"),
            3
        );
        // Deleting the child rows directly is a soft delete as usual.
        run("DELETE FROM notes WHERE id = 1");
        assert_eq!(count("SELECT count(*) FROM notes WHERE deleted_at IS NOT NULL"), 1);
    }

    #[pg_test]
    fn purge_removes_old_soft_deleted_rows_children_first_and_logs_them() {
        incident();
        run("DELETE FROM users WHERE id = 1");
        // Not old enough yet.
        assert_eq!(count("SELECT invariants.purge('users')"), 0);
        run("SET LOCAL invariants.allow_undelete = on");
        run("UPDATE users SET deleted_at = deleted_at - interval '40 days' WHERE deleted_at IS NOT NULL");
        run("UPDATE talent SET deleted_at = deleted_at - interval '40 days' WHERE deleted_at IS NOT NULL");
        run("UPDATE deal SET deleted_at = deleted_at - interval '40 days' WHERE deleted_at IS NOT NULL");
        run("RESET invariants.allow_undelete");
        assert_eq!(count("SELECT invariants.purge('users', '30 days')"), 1);
        assert_eq!(
            (
                count("SELECT count(*) FROM users"),
                count("SELECT count(*) FROM talent"),
                count("SELECT count(*) FROM deal")
            ),
            (1, 10, 25)
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'PURGE'"),
            36
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'PURGE' AND tbl = 'deal'::regclass"),
            25
        );
        // Purged rows can be restored from the log.
        assert_eq!(
            count("SELECT sum(restored)::bigint FROM invariants.restore(since => now())"),
            36
        );
        assert_eq!(count("SELECT count(*) FROM deal"), 50);
    }

    #[pg_test]
    fn purge_refuses_to_take_live_children_with_it() {
        run("CREATE TABLE p (id int PRIMARY KEY, deleted_at timestamptz)");
        run("CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p ON DELETE CASCADE, deleted_at timestamptz)");
        run("INSERT INTO p VALUES (1, now() - interval '60 days'); INSERT INTO c VALUES (1, 1, NULL)");
        run("SELECT invariants.enable_soft_delete('p')");
        assert_eq!(sqlstate_of("SELECT invariants.purge('p')"), "23503");
        assert_eq!(count("SELECT count(*) FROM p") + count("SELECT count(*) FROM c"), 2);
    }

    #[pg_test]
    fn undelete_brings_back_rows_and_their_cascaded_children() {
        incident();
        // A deal deleted on its own, earlier, stays deleted.
        run("UPDATE deal SET deleted_at = now() - interval '1 hour' WHERE id = 2");
        run("DELETE FROM users WHERE id = 1");
        assert_eq!(
            count("SELECT invariants.undelete('users', now() - interval '1 minute')"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM users WHERE deleted_at IS NULL"), 2);
        assert_eq!(count("SELECT count(*) FROM talent WHERE deleted_at IS NULL"), 20);
        assert_eq!(count("SELECT count(*) FROM deal WHERE deleted_at IS NULL"), 49);
    }

    #[pg_test]
    fn disabling_makes_delete_delete_again() {
        run("CREATE TABLE d (id int PRIMARY KEY, deleted_at timestamptz)");
        run("INSERT INTO d VALUES (1), (2)");
        run("SELECT invariants.enable_soft_delete('d')");
        run("SELECT invariants.enable_soft_delete('d')");
        run("DELETE FROM d WHERE id = 1");
        run("SELECT invariants.disable_soft_delete('d')");
        run("SELECT invariants.disable_soft_delete('d')");
        run("DELETE FROM d WHERE id = 2");
        assert_eq!(count("SELECT count(*) FROM d"), 1);
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'd'::regclass AND NOT tgisinternal"),
            0
        );
    }

    #[pg_test]
    fn partitioned_soft_delete_tables() {
        run("CREATE TABLE ev (id int, region text, deleted_at timestamptz, PRIMARY KEY (id, region)) PARTITION BY LIST (region)");
        run("CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu')");
        run("CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us')");
        run("INSERT INTO ev SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 10) i");
        run("SELECT invariants.enable_soft_delete('ev')");
        run("DELETE FROM ev WHERE id <= 4");
        run("DELETE FROM ev_us WHERE id = 5");
        assert_eq!(count("SELECT count(*) FROM ev"), 10);
        assert_eq!(count("SELECT count(*) FROM ev WHERE deleted_at IS NOT NULL"), 5);
    }

    #[pg_test]
    fn soft_delete_bad_arguments_change_nothing() {
        run("CREATE TABLE s1 (id int PRIMARY KEY, deleted_at timestamptz, gone_on date)");
        run("CREATE TABLE s1_child (id int PRIMARY KEY, s1_id int REFERENCES s1 ON DELETE CASCADE)");
        run("CREATE TABLE plain (id int PRIMARY KEY)");
        let cases = [
            ("SELECT invariants.enable_soft_delete(NULL)", "22004"),
            ("SELECT invariants.enable_soft_delete('nope')", "42P01"),
            ("SELECT invariants.enable_soft_delete('s1', 'nope')", "42703"),
            ("SELECT invariants.enable_soft_delete('s1', 'gone_on')", "42804"),
            ("SELECT invariants.enable_soft_delete('s1', NULL)", "22004"),
            (
                "SELECT invariants.enable_soft_delete('s1', 'deleted_at', NULL)",
                "22004",
            ),
            ("SELECT invariants.purge('plain')", "55000"),
            ("SELECT invariants.purge('s1', NULL)", "22004"),
            ("SELECT invariants.purge('s1', '-1 day')", "22023"),
            ("SELECT invariants.undelete('plain', now())", "55000"),
            ("SELECT invariants.undelete('s1', NULL)", "22004"),
        ];
        for (sql, expected) in cases {
            let error = error_of(sql).unwrap_or_else(|| panic!("expected {expected} from {sql}"));
            assert_eq!(error.sqlstate, expected, "{sql}: {error:?}");
        }
        // The child of the cascade lacks the column: both tables are named.
        let error = error_of("SELECT invariants.enable_soft_delete('s1')").expect("refused");
        assert_eq!(error.sqlstate, "42703");
        assert!(
            error.message.contains("public.s1_child") && error.message.contains("public.s1"),
            "{error:?}"
        );
        assert_eq!(count("SELECT count(*) FROM invariants.soft_delete_tables"), 0);
        run("SELECT invariants.enable_soft_delete('s1', cascade => false)");
        assert_eq!(count("SELECT count(*) FROM invariants.soft_delete_tables"), 1);
    }

    #[pg_test]
    fn lint_finds_unique_constraints_that_count_deleted_rows() {
        run("CREATE TABLE members (id int PRIMARY KEY, email text CONSTRAINT members_email UNIQUE, deleted_at timestamptz)");
        run("SELECT invariants.enable_soft_delete('members')");
        let fix = Spi::get_one::<String>("SELECT fix FROM invariants.lint() WHERE problem LIKE 'unique (email)%'")
            .unwrap()
            .unwrap();
        assert!(fix.contains("WHERE \"deleted_at\" IS NULL"), "{fix}");
        run(&fix);
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE problem LIKE 'unique (email)%'"),
            0
        );
        run("INSERT INTO members VALUES (1, 'a@x'); DELETE FROM members; INSERT INTO members VALUES (2, 'a@x')");
        assert_eq!(count("SELECT count(*) FROM members WHERE email = 'a@x'"), 2);
    }

    #[pg_test]
    fn health_and_lint_cover_soft_delete_tables() {
        run("CREATE TABLE owners (id int PRIMARY KEY)");
        run("CREATE TABLE pets (id int PRIMARY KEY, owner_id int CONSTRAINT pets_owner REFERENCES owners ON DELETE CASCADE,
                                deleted_at timestamptz)");
        run("SELECT invariants.enable_soft_delete('pets')");
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object = 'public.pets.pets_owner' AND problem LIKE '%soft-delete table public.pets%'"),
            1
        );
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE pets DISABLE TRIGGER invariants_soft_delete; RESET invariants.allow_drop");
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(health["soft_delete_mode"], "trigger");
        let protections = health["protections"].to_string();
        assert!(
            protections.contains("soft delete") && protections.contains("disabled"),
            "{protections}"
        );
        assert!(health["recommendations"]
            .to_string()
            .contains("ENABLE TRIGGER invariants_soft_delete"));
    }

    #[pg_test]
    fn hide_makes_deleted_rows_invisible_to_application_roles_only() {
        run("CREATE TABLE docs (id int PRIMARY KEY, deleted_at timestamptz)");
        run("INSERT INTO docs SELECT generate_series(1, 3)");
        run("SELECT invariants.enable_soft_delete('docs', hide => true)");
        run("CREATE ROLE docs_app; GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO docs_app");
        run("DELETE FROM docs WHERE id = 1");
        run("SET LOCAL ROLE docs_app");
        assert_eq!(count("SELECT count(*) FROM docs"), 2);
        run("DELETE FROM docs WHERE id = 2");
        assert_eq!(count("SELECT count(*) FROM docs"), 1);
        run("INSERT INTO docs VALUES (4)");
        assert_eq!(count("SELECT count(*) FROM docs"), 2);
        run("RESET ROLE");
        // The owner (here a superuser) sees every row, and undelete reaches them.
        assert_eq!(count("SELECT count(*) FROM docs"), 4);
        assert_eq!(count("SELECT invariants.undelete('docs', now())"), 2);
        run("SET LOCAL ROLE docs_app");
        assert_eq!(count("SELECT count(*) FROM docs"), 4);
        run("RESET ROLE");
        // Switching hiding off removes the policies and the RLS it added.
        run("SELECT invariants.enable_soft_delete('docs', hide => false)");
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 'docs'::regclass"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_class WHERE oid = 'docs'::regclass AND relrowsecurity"),
            0
        );
        assert_eq!(
            sqlstate_of("SELECT invariants.enable_soft_delete('docs', hide => NULL)"),
            "22004"
        );
    }
}
