//! Tests of the guards and lint.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of};

    fn table(name: &str, rows: i32) {
        run(&format!("CREATE TABLE {name} (id int PRIMARY KEY, v text)"));
        run(&format!(
            "INSERT INTO {name} SELECT i, 'v' || i FROM generate_series(1, {rows}) i"
        ));
    }

    #[pg_test]
    fn truncate_of_a_protected_table_is_refused_unless_allowed() {
        table("g1", 5);
        table("g2", 3);
        run("SELECT invariants.protect('g1')");
        let error = error_of("TRUNCATE g1").expect("refused");
        assert_eq!(error.sqlstate, "55000");
        assert!(
            error.message.contains("TRUNCATE of protected table public.g1 refused"),
            "{error:?}"
        );
        assert!(error.hint.contains("invariants.allow_truncate"), "{error:?}");
        assert_eq!(sqlstate_of("TRUNCATE g2, g1"), "55000");
        assert_eq!(
            (count("SELECT count(*) FROM g1"), count("SELECT count(*) FROM g2")),
            (5, 3)
        );
        run("SET LOCAL invariants.allow_truncate = on");
        run("TRUNCATE g1");
        run("SET LOCAL invariants.allow_truncate = off");
        assert_eq!(count("SELECT count(*) FROM g1"), 0);
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE' AND tbl = 'g1'::regclass"),
            5
        );
    }

    #[pg_test]
    fn truncate_cascade_reaching_a_protected_table_is_refused() {
        table("parent", 2);
        run("CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)");
        run("INSERT INTO child VALUES (1, 1), (2, 2)");
        run("SELECT invariants.protect('child')");
        assert_eq!(sqlstate_of("TRUNCATE parent CASCADE"), "55000");
        assert_eq!(
            count("SELECT count(*) FROM parent") + count("SELECT count(*) FROM child"),
            4
        );
    }

    #[pg_test]
    fn mass_delete_is_refused_directly_and_through_a_cascade() {
        table("g3", 20);
        run("SELECT invariants.protect('g3', max_delete_rows => 10)");
        let error = error_of("DELETE FROM g3 WHERE id <= 11").expect("refused");
        assert_eq!(error.sqlstate, "54000");
        assert!(
            error.message.contains("remove 11 rows of protected table public.g3"),
            "{error:?}"
        );
        assert!(error.message.contains("limit of 10"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM g3"), 20);

        run("CREATE TABLE owners (id int PRIMARY KEY)");
        run("CREATE TABLE deals (id int PRIMARY KEY, owner_id int REFERENCES owners ON DELETE CASCADE)");
        run("INSERT INTO owners VALUES (1), (2); INSERT INTO deals SELECT i, 1 + i % 2 FROM generate_series(1, 30) i");
        run("SELECT invariants.protect('deals', 10)");
        let error = error_of("DELETE FROM owners WHERE id = 1").expect("refused");
        assert_eq!(error.sqlstate, "54000");
        assert!(error.message.contains("protected table public.deals"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM owners"), 2);
        assert_eq!(count("SELECT count(*) FROM deals"), 30);
    }

    #[pg_test]
    fn the_budget_is_summed_over_statements_and_given_back_by_rollbacks() {
        table("g4", 30);
        run("SELECT invariants.protect('g4', 10)");
        run("DELETE FROM g4 WHERE id <= 6");
        let error = error_of("DELETE FROM g4 WHERE id BETWEEN 7 AND 11").expect("refused: 6 + 5 > 10");
        assert!(error.message.contains("remove 11 rows"), "{error:?}");
        assert!(error.detail.contains("6 rows were deleted earlier"), "{error:?}");
        // A failed over-limit DELETE in an exception block, then a small one.
        run("DO $$ BEGIN DELETE FROM g4 WHERE id > 10; EXCEPTION WHEN program_limit_exceeded THEN NULL; END $$");
        run("DELETE FROM g4 WHERE id BETWEEN 7 AND 10");
        assert_eq!(count("SELECT count(*) FROM g4"), 20);
        // A subtransaction that rolled back gives its rows back.
        table("g5", 30);
        run("SELECT invariants.protect('g5', 10)");
        run("DO $$ BEGIN DELETE FROM g5 WHERE id <= 8; RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END $$");
        run("DELETE FROM g5 WHERE id <= 9");
        assert_eq!(count("SELECT count(*) FROM g5"), 21);
    }

    #[pg_test]
    fn max_delete_rows_setting_raises_the_limit_for_the_owner() {
        table("g6", 30);
        run("SELECT invariants.protect('g6', 10)");
        run("SET LOCAL invariants.max_delete_rows = 25");
        run("DELETE FROM g6 WHERE id <= 20");
        assert_eq!(sqlstate_of("DELETE FROM g6 WHERE id <= 26"), "54000");
        run("SET LOCAL invariants.max_delete_rows = 0");
        run("DELETE FROM g6");
        assert_eq!(count("SELECT count(*) FROM g6"), 0);
    }

    #[pg_test]
    fn an_application_role_cannot_use_the_switches() {
        table("g7", 30);
        run("SELECT invariants.protect('g7', 10)");
        run("CREATE ROLE g7_app; GRANT ALL ON g7 TO g7_app; GRANT USAGE ON SCHEMA invariants TO g7_app");
        run("SET LOCAL ROLE g7_app");
        run("SET LOCAL invariants.max_delete_rows = 0");
        let error = error_of("DELETE FROM g7").expect("refused");
        assert_eq!(error.sqlstate, "42501");
        assert!(error.message.contains("honored only for the owner"), "{error:?}");
        run("SET LOCAL invariants.allow_truncate = on");
        assert_eq!(sqlstate_of("TRUNCATE g7"), "42501");
        run("RESET ROLE");
        assert_eq!(count("SELECT count(*) FROM g7"), 30);
    }

    #[pg_test]
    fn drops_of_protected_tables_and_columns_are_refused_unless_allowed() {
        run("CREATE TYPE mood AS ENUM ('ok', 'sad')");
        run("CREATE SCHEMA crm");
        run("CREATE FUNCTION crm.next_code() RETURNS text LANGUAGE sql AS $$ SELECT 'c' $$");
        run("CREATE TABLE crm.deal (id int PRIMARY KEY, m mood, code text DEFAULT crm.next_code(), note text)");
        run("SELECT invariants.protect('crm.deal')");
        let error = error_of("DROP TABLE crm.deal").expect("refused");
        assert_eq!(error.sqlstate, "55000");
        assert!(
            error.message.contains("DROP of protected table crm.deal refused"),
            "{error:?}"
        );
        assert!(error.hint.contains("invariants.allow_drop"), "{error:?}");
        assert_eq!(sqlstate_of("ALTER TABLE crm.deal DROP COLUMN note"), "55000");
        assert_eq!(sqlstate_of("DROP TYPE mood CASCADE"), "55000");
        assert_eq!(sqlstate_of("DROP FUNCTION crm.next_code() CASCADE"), "55000");
        assert_eq!(sqlstate_of("DROP SCHEMA crm CASCADE"), "55000");
        assert_eq!(
            sqlstate_of("ALTER TABLE crm.deal DISABLE TRIGGER invariants_audit_delete"),
            "55000"
        );
        assert_eq!(sqlstate_of("ALTER TABLE crm.deal DISABLE TRIGGER ALL"), "55000");
        assert_eq!(sqlstate_of("DROP TRIGGER invariants_truncate ON crm.deal"), "55000");
        assert_eq!(count("SELECT count(*) FROM pg_attribute WHERE attrelid = 'crm.deal'::regclass AND attnum > 0 AND NOT attisdropped"), 4);
        assert_eq!(count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'crm.deal'::regclass AND tgenabled = 'O' AND tgname LIKE 'invariants%'"), 2);
        // Each allowed path, recorded in the audit log.
        run("SET LOCAL invariants.allow_drop = on");
        run("ALTER TABLE crm.deal DROP COLUMN note");
        run("DROP TABLE crm.deal");
        run("SET LOCAL invariants.allow_drop = off");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DROP' AND table_name = 'deal'"),
            2
        );
        assert_eq!(count("SELECT count(*) FROM invariants.protected_tables"), 0);
        assert_eq!(count("SELECT count(*) FROM invariants.audited_tables"), 0);
    }

    #[pg_test]
    fn unprotect_and_the_extension_s_own_trigger_changes() {
        table("g8", 3);
        run("SELECT invariants.protect('g8')");
        assert_eq!(sqlstate_of("SELECT invariants.disable_audit('g8')"), "55000");
        // The extension may change its own triggers (rules come and go).
        run("ALTER TABLE g8 ADD COLUMN status text, ADD COLUMN done_at timestamptz");
        run("SELECT invariants.require_not_null('g8', 'done_at', 'status', ARRAY['done'])");
        run("SELECT invariants.drop_rule('g8', 'done_at_required_when_status')");
        run("SELECT invariants.unprotect('g8')");
        run("SELECT invariants.unprotect('g8')");
        run("TRUNCATE g8");
        run("SELECT invariants.disable_audit('g8')");
        run("DROP TABLE g8");
    }

    #[pg_test]
    fn protect_bad_arguments() {
        table("g9", 1);
        run("CREATE VIEW g9_v AS SELECT * FROM g9");
        assert_eq!(sqlstate_of("SELECT invariants.protect(NULL)"), "22004");
        assert_eq!(sqlstate_of("SELECT invariants.protect('nope')"), "42P01");
        assert_eq!(sqlstate_of("SELECT invariants.protect('g9_v')"), "42809");
        assert_eq!(sqlstate_of("SELECT invariants.protect('g9', -1)"), "22023");
        assert_eq!(sqlstate_of("SELECT invariants.protect('g9', NULL)"), "22004");
        assert_eq!(count("SELECT count(*) FROM invariants.protected_tables"), 0);
        // Twice is harmless and changes the limit.
        run("SELECT invariants.protect('g9', 5); SELECT invariants.protect('g9', 7)");
        assert_eq!(count("SELECT max_delete_rows FROM invariants.protected_tables"), 7);
    }

    #[pg_test]
    fn lint_finds_cascades_broken_rules_and_disabled_protections() {
        run("CREATE TABLE users (id int PRIMARY KEY)");
        run("CREATE TABLE talent (id int PRIMARY KEY, user_id int CONSTRAINT talent_user REFERENCES users ON DELETE CASCADE,
                                   status text, done_at timestamptz)");
        run("SELECT invariants.protect('talent')");
        run("SELECT invariants.require_not_null('talent', 'done_at', 'status', ARRAY['done'])");
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE talent DROP COLUMN done_at CASCADE; RESET invariants.allow_drop");
        run("CREATE TABLE notes (id int PRIMARY KEY)");
        run("SELECT invariants.enable_audit('notes')");
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE notes DISABLE TRIGGER invariants_audit_delete; RESET invariants.allow_drop");
        let fix =
            Spi::get_one::<String>("SELECT fix FROM invariants.lint() WHERE object = 'public.talent.talent_user'")
                .unwrap()
                .unwrap();
        assert!(
            fix.contains("ON DELETE RESTRICT") && fix.contains("DROP CONSTRAINT \"talent_user\""),
            "{fix}"
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE problem LIKE '%done_at%no longer exists%'"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object = 'public.notes: trigger invariants_audit_delete' AND fix LIKE 'ALTER TABLE public.notes ENABLE TRIGGER%'"),
            1
        );
        // Applying the fix clears the finding.
        run(&fix);
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object = 'public.talent.talent_user'"),
            0
        );
    }
}
