//! Tests that nothing a caller controls runs with the rights the extension
//! takes on for a moment (the extension's owner, a table's owner), and of
//! the fixes that keep soft delete and counts from being bypassed.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of, text};

    /// Operators and functions of a schema the caller puts before pg_catalog,
    /// each recording who ran it.
    fn hostile_schema() {
        run("CREATE SCHEMA evil;
             CREATE TABLE evil.calls (who text);
             GRANT ALL ON SCHEMA evil TO PUBLIC; GRANT ALL ON evil.calls TO PUBLIC;
             CREATE FUNCTION evil.eq_tid(tid, tid) RETURNS bool LANGUAGE sql AS
               $$ INSERT INTO evil.calls VALUES (current_user) RETURNING $1 OPERATOR(pg_catalog.=) $2 $$;
             CREATE OPERATOR evil.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = evil.eq_tid);
             CREATE FUNCTION evil.eq_ts(timestamptz, timestamptz) RETURNS bool LANGUAGE sql AS
               $$ INSERT INTO evil.calls VALUES (current_user) RETURNING $1 OPERATOR(pg_catalog.=) $2 $$;
             CREATE OPERATOR evil.= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.eq_ts);
             CREATE FUNCTION evil.eq_int(int, int) RETURNS bool LANGUAGE sql AS
               $$ INSERT INTO evil.calls VALUES (current_user) RETURNING $1 OPERATOR(pg_catalog.=) $2 $$;
             CREATE OPERATOR evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = evil.eq_int);");
    }

    #[pg_test]
    fn soft_delete_as_the_table_owner_ignores_the_callers_operators() {
        hostile_schema();
        run("CREATE TABLE users (id int PRIMARY KEY, deleted_at timestamptz);
             CREATE TABLE talent (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE, deleted_at timestamptz);
             INSERT INTO users VALUES (1); INSERT INTO talent VALUES (1, 1), (2, 1);
             SELECT invariants.enable_soft_delete('users');
             CREATE ROLE bob; GRANT DELETE, SELECT ON users, talent TO bob;");
        run("SET LOCAL ROLE bob; SET LOCAL search_path = evil, pg_catalog, public");
        run("DELETE FROM public.users");
        run("RESET ROLE; SET LOCAL search_path = public");
        assert_eq!(count("SELECT count(*) FROM talent WHERE deleted_at IS NOT NULL"), 2);
        assert_eq!(count("SELECT count(*) FROM evil.calls"), 0);
    }

    #[pg_test]
    fn audit_never_calls_a_users_cast_to_json() {
        run("CREATE ROLE mallory; GRANT CREATE, USAGE ON SCHEMA public TO mallory");
        run("SET LOCAL ROLE mallory");
        run("CREATE TABLE public.seen (who text, super bool);
             CREATE TYPE public.mood AS ENUM ('x');
             CREATE FUNCTION public.mood_json(public.mood) RETURNS json LANGUAGE sql AS
               $$ INSERT INTO public.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user
                  RETURNING '1'::json $$;
             CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_json(public.mood);
             CREATE TABLE public.moods (id int PRIMARY KEY, m public.mood);
             INSERT INTO public.moods VALUES (1, 'x'), (2, 'x');
             SELECT invariants.enable_audit('public.moods');
             DELETE FROM public.moods WHERE id = 1;
             TRUNCATE public.moods;");
        run("RESET ROLE");
        assert_eq!(count("SELECT count(*) FROM seen"), 0, "a user's cast ran");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'moods'::regclass AND row_data->>'m' = 'x'"),
            2
        );
        assert_eq!(
            text("SELECT DISTINCT db_user FROM invariants.audit_log WHERE tbl = 'moods'::regclass"),
            "mallory"
        );
    }

    #[pg_test]
    fn a_hard_cascade_into_an_already_soft_deleted_child_is_refused_too() {
        run("CREATE TABLE p (id int PRIMARY KEY);
             CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p ON DELETE CASCADE, deleted_at timestamptz);
             INSERT INTO p VALUES (1); INSERT INTO c VALUES (10, 1);
             SELECT invariants.enable_soft_delete('c');
             DELETE FROM c WHERE id = 10;");
        assert_eq!(sqlstate_of("DELETE FROM p"), "23503");
        assert_eq!(count("SELECT count(*) FROM p") + count("SELECT count(*) FROM c"), 2);
    }

    #[pg_test]
    fn a_renamed_soft_delete_column_follows_and_a_dropped_one_makes_delete_fail() {
        run("CREATE TABLE r (id int PRIMARY KEY, deleted_at timestamptz);
             INSERT INTO r VALUES (1), (2);
             SELECT invariants.enable_soft_delete('r');
             ALTER TABLE r RENAME COLUMN deleted_at TO removed_at;");
        run("DELETE FROM r WHERE id = 1");
        assert_eq!(count("SELECT count(*) FROM r WHERE removed_at IS NOT NULL"), 1);
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE r DROP COLUMN removed_at CASCADE; RESET invariants.allow_drop");
        let error = error_of("DELETE FROM r").expect("refused");
        assert_eq!(error.sqlstate, "42703");
        assert!(error.hint.contains("enable_soft_delete"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM r"), 2);
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE problem LIKE '%no longer exists, so DELETE%'"),
            1
        );
        run("ALTER TABLE r ADD COLUMN gone_at timestamptz");
        run("SELECT invariants.enable_soft_delete('r', 'gone_at')");
        run("DELETE FROM r");
        assert_eq!(count("SELECT count(*) FROM r WHERE gone_at IS NOT NULL"), 2);
    }

    #[pg_test]
    fn a_child_counted_by_two_parents_is_checked_for_both() {
        run("CREATE TABLE customers (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
             CREATE TABLE stores (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
             CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, store_id int REFERENCES stores);
             SELECT invariants.require_count('customers', 'n', 'orders', 'customer_id', 'counted');
             SELECT invariants.require_count('stores', 'n', 'orders', 'store_id', 'counted');
             INSERT INTO customers VALUES (1, 0); INSERT INTO stores VALUES (1, 0);
             SELECT invariants.check_counts();");
        let error = error_of(
            "DO $d$ BEGIN INSERT INTO orders VALUES (1, 1, 1); UPDATE customers SET n = 1;
             PERFORM invariants.check_counts(); END $d$",
        )
        .expect("the store's count is wrong");
        assert_eq!(error.table, "stores");
        run(
            "INSERT INTO orders VALUES (1, 1, 1); UPDATE customers SET n = 1; UPDATE stores SET n = 1;
             SELECT invariants.check_counts()",
        );
        assert_eq!(count("SELECT count(*) FROM orders"), 1);
    }

    #[pg_test]
    fn repair_and_detection_over_all_tables_skip_other_owners_tables() {
        run("CREATE ROLE ann; CREATE ROLE ben; GRANT CREATE, USAGE ON SCHEMA public TO ann, ben");
        for (role, table) in [("ann", "a_items"), ("ben", "b_items")] {
            run(&format!(
                "SET LOCAL ROLE {role};
                 CREATE TABLE {table} (id int PRIMARY KEY, status text, sent_at timestamptz);
                 INSERT INTO {table} VALUES (1, 'sent', NULL);
                 SELECT invariants.require_not_null('{table}', 'sent_at', 'status', ARRAY['sent'],
                          repair => '{{\"set\": {{\"status\": \"new\"}}}}');
                 RESET ROLE;"
            ));
        }
        run("SET LOCAL ROLE ann");
        assert_eq!(count("SELECT count(*) FROM invariants.violations()"), 1);
        assert_eq!(count("SELECT sum(fixed_count)::bigint FROM invariants.repair()"), 1);
        run("RESET ROLE");
        assert_eq!(text("SELECT status FROM a_items"), "new");
        assert_eq!(text("SELECT status FROM b_items"), "sent");
    }

    #[pg_test]
    fn enabling_a_protected_table_s_trigger_for_replicas_only_is_refused() {
        run("CREATE TABLE rp (id int PRIMARY KEY); SELECT invariants.protect('rp')");
        assert_eq!(
            sqlstate_of("ALTER TABLE rp ENABLE REPLICA TRIGGER invariants_truncate"),
            "55000"
        );
    }

    #[pg_test]
    fn quoted_values_survive_without_standard_conforming_strings() {
        run("CREATE TABLE q (id int PRIMARY KEY, status text, sent_at timestamptz)");
        run(r#"INSERT INTO q VALUES (1, E'it\\''s', NULL), (2, 'a\b', NULL), (3, 'other', NULL)"#);
        run(r#"SELECT invariants.require_not_null('q', 'sent_at', 'status', ARRAY[E'it\\''s', 'a\b'])"#);
        run("SET LOCAL standard_conforming_strings = off");
        assert_eq!(count("SELECT violating FROM invariants.violations('q')"), 2);
        run("SET LOCAL standard_conforming_strings = on");
        assert_eq!(count("SELECT violating FROM invariants.violations('q')"), 2);
    }

    #[pg_test]
    fn detection_agrees_with_the_trigger_on_values_of_other_types() {
        run("CREATE TABLE lv (id int PRIMARY KEY, level numeric, note text)");
        run("SELECT invariants.require_not_null('lv', 'note', 'level', ARRAY['1'])");
        // Compared as numbers: 1.0 is 1, for the trigger and for detection.
        assert_eq!(sqlstate_of("INSERT INTO lv VALUES (1, 1.0, NULL)"), "23514");
        assert_eq!(sqlstate_of("INSERT INTO lv VALUES (2, 1, NULL)"), "23514");
        run("INSERT INTO lv VALUES (3, 2, NULL), (4, 1.00, 'x')");
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE lv DISABLE TRIGGER invariants_rules; INSERT INTO lv VALUES (5, 1.000, NULL); ALTER TABLE lv ENABLE TRIGGER invariants_rules; RESET invariants.allow_drop");
        assert_eq!(count("SELECT violating FROM invariants.violations('lv')"), 1);
    }

    #[pg_test]
    fn partitions_created_or_attached_later_are_covered() {
        run("CREATE TABLE ev (id int, region text, deleted_at timestamptz, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
             SELECT invariants.protect('ev', max_delete_rows => 5);
             CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
             CREATE TABLE ev_asia (id int NOT NULL, region text NOT NULL, deleted_at timestamptz);
             ALTER TABLE ev ATTACH PARTITION ev_asia FOR VALUES IN ('asia');
             INSERT INTO ev SELECT i, (ARRAY['eu', 'us', 'asia'])[1 + i % 3] FROM generate_series(1, 30) i;");
        // Audited and guarded like the first partition.
        run("DELETE FROM ev_us WHERE id <= 6");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'ev_us'::regclass"),
            2
        );
        assert_eq!(sqlstate_of("TRUNCATE ev_asia"), "55000");
        // One budget for the protected table, however its partitions are named.
        run("DELETE FROM ev_eu WHERE id <= 6");
        assert_eq!(sqlstate_of("DELETE FROM ev_asia WHERE id <= 9"), "54000");

        run("CREATE TABLE sd (id int, region text, deleted_at timestamptz, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             SELECT invariants.enable_soft_delete('sd');
             CREATE TABLE sd_eu PARTITION OF sd FOR VALUES IN ('eu');
             INSERT INTO sd VALUES (1, 'eu'), (2, 'eu');
             DELETE FROM sd_eu WHERE id = 1;");
        assert_eq!(count("SELECT count(*) FROM sd WHERE deleted_at IS NOT NULL"), 1);
        assert_eq!(count("SELECT count(*) FROM sd"), 2);
    }

    #[pg_test]
    fn deferred_triggers_of_a_table_run_for_its_owner_and_are_refused_for_others() {
        run("CREATE ROLE downer; GRANT CREATE, USAGE ON SCHEMA public TO downer");
        run("SET LOCAL ROLE downer");
        run("CREATE TABLE d (id int PRIMARY KEY);
             CREATE TABLE d_seen (who text);
             CREATE FUNCTION d_late() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO d_seen VALUES (current_user); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER d_late AFTER INSERT ON d DEFERRABLE INITIALLY DEFERRED
               FOR EACH ROW EXECUTE FUNCTION d_late();
             INSERT INTO d VALUES (1), (2);
             SELECT invariants.enable_audit('d');
             DELETE FROM d;");
        run("RESET ROLE");
        // A superuser's restore would queue the owner's deferred trigger to run
        // at COMMIT as the superuser: Postgres refuses it in the restricted context.
        assert_eq!(sqlstate_of("SELECT * FROM invariants.restore(tbl => 'd')"), "42501");
        assert_eq!(count("SELECT count(*) FROM d"), 0);
        // The owner's own restore runs it (as the owner, at COMMIT).
        run("SET LOCAL ROLE downer");
        assert_eq!(count("SELECT restored FROM invariants.restore(tbl => 'd')"), 2);
        run("RESET ROLE");
        assert_eq!(count("SELECT count(*) FROM d"), 2);
    }
}
