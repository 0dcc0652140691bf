//! Tests of row-state rules: enforcement, detection, repair, health.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of, text};

    const POST_CONTACT: &str = "ARRAY['connection_request_sent', 'connected', 'messaging', 'replied', 'failed']";

    /// The incident's table with its three rules.
    fn prospects(table: &str) {
        run(&format!(
            "CREATE TABLE {table} (id serial PRIMARY KEY, campaign_id int, status text NOT NULL DEFAULT 'pending',
                                   contacted_at timestamptz, note text)"
        ));
        run(&format!(
            "SELECT invariants.require_not_null('{table}', 'contacted_at', 'status', ARRAY['connection_request_sent'],
                    repair => '{{\"set\": {{\"status\": \"pending\"}}, \"group_by\": \"campaign_id\"}}')"
        ));
        run(&format!(
            "SELECT invariants.require_on_set('{table}', 'status', 'contacted_at', {POST_CONTACT})"
        ));
        run(&format!("SELECT invariants.write_once('{table}', 'contacted_at')"));
    }

    #[pg_test]
    fn require_not_null_refuses_status_without_timestamp_on_insert_and_update() {
        prospects("p1");
        let error = error_of("INSERT INTO p1 (status) VALUES ('connection_request_sent')").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(error.constraint, "contacted_at_required_when_status");
        assert_eq!((error.schema.as_str(), error.table.as_str()), ("public", "p1"));
        assert!(
            error
                .message
                .contains("violates rule \"contacted_at_required_when_status\""),
            "{error:?}"
        );
        assert!(
            error
                .detail
                .contains("contacted_at is NULL while status = 'connection_request_sent'"),
            "{error:?}"
        );
        assert!(error.detail.contains("Failing row key: (id)="), "{error:?}");
        assert!(error.hint.contains("Set contacted_at"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM p1"), 0);

        run("INSERT INTO p1 (status) VALUES ('pending')");
        run("INSERT INTO p1 (status, contacted_at) VALUES ('connection_request_sent', now())");
        let error =
            error_of("UPDATE p1 SET status = 'connection_request_sent' WHERE status = 'pending'").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(count("SELECT count(*) FROM p1 WHERE status = 'pending'"), 1);
        run("UPDATE p1 SET status = 'connection_request_sent', contacted_at = now() WHERE status = 'pending'");
        assert_eq!(
            count("SELECT count(*) FROM p1 WHERE status = 'connection_request_sent'"),
            2
        );
    }

    #[pg_test]
    fn require_on_set_limits_status_once_the_timestamp_is_set() {
        prospects("p2");
        let error = error_of("INSERT INTO p2 (status, contacted_at) VALUES ('pending', now())").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(error.constraint, "status_allowed_when_contacted_at_set");
        assert!(
            error.detail.contains("status = 'pending' while contacted_at is set"),
            "{error:?}"
        );
        run("INSERT INTO p2 (status) VALUES ('pending')");
        assert_eq!(sqlstate_of("UPDATE p2 SET contacted_at = now()"), "23514");
        // The incident's disagreement: 'failed' with a timestamp is allowed.
        run("UPDATE p2 SET contacted_at = now(), status = 'failed'");
        assert_eq!(sqlstate_of("UPDATE p2 SET status = 'pending'"), "23514");
        run("UPDATE p2 SET status = 'replied'");
        assert_eq!(count("SELECT count(*) FROM p2 WHERE status = 'replied'"), 1);
    }

    #[pg_test]
    fn write_once_no_clear_and_immutable() {
        prospects("p3");
        run("INSERT INTO p3 (status, contacted_at) VALUES ('connected', '2026-01-01')");
        let error = error_of("UPDATE p3 SET contacted_at = NULL").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(error.constraint, "contacted_at_write_once");
        assert!(error.hint.contains("never be cleared"), "{error:?}");
        // no_clear allows a new value.
        run("UPDATE p3 SET contacted_at = '2026-02-01'");

        run("CREATE TABLE orders (id int PRIMARY KEY, placed_at timestamptz, total numeric)");
        run("SELECT invariants.write_once('orders', 'placed_at', 'immutable')");
        run("INSERT INTO orders VALUES (1, NULL, 10)");
        run("UPDATE orders SET placed_at = '2026-01-01'"); // NULL -> value is allowed
        assert_eq!(sqlstate_of("UPDATE orders SET placed_at = '2026-01-02'"), "23514");
        assert_eq!(sqlstate_of("UPDATE orders SET placed_at = NULL"), "23514");
        run("UPDATE orders SET placed_at = '2026-01-01'"); // same value: no change
        assert_eq!(count("SELECT count(*) FROM orders WHERE placed_at = '2026-01-01'"), 1);
    }

    #[pg_test]
    fn allow_transitions_follows_the_graph() {
        run("CREATE TABLE jobs (id int PRIMARY KEY, state text)");
        run(r#"SELECT invariants.allow_transitions('jobs', 'state',
                '{"pending": ["queued", "sent"], "queued": ["sent"], "sent": []}')"#);
        run("INSERT INTO jobs VALUES (1, 'pending'), (2, NULL)");
        assert_eq!(sqlstate_of("INSERT INTO jobs VALUES (3, 'bogus')"), "23514");
        run("UPDATE jobs SET state = 'queued' WHERE id = 1");
        let error = error_of("UPDATE jobs SET state = 'pending' WHERE id = 1").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert_eq!(error.constraint, "state_transitions");
        assert!(error.detail.contains("from 'queued' to 'pending'"), "{error:?}");
        assert!(error.hint.contains("'sent'"), "{error:?}");
        run("UPDATE jobs SET state = 'sent' WHERE id = 1");
        assert_eq!(sqlstate_of("UPDATE jobs SET state = 'queued' WHERE id = 1"), "23514");
        assert_eq!(sqlstate_of("UPDATE jobs SET state = NULL WHERE id = 1"), "23514");
        run("UPDATE jobs SET state = 'pending' WHERE id = 2"); // NULL -> a known state
        assert_eq!(count("SELECT count(*) FROM jobs WHERE state = 'sent'"), 1);
    }

    #[pg_test]
    fn enum_and_integer_columns_compare_in_their_own_type() {
        run("CREATE TYPE mood AS ENUM ('calm', 'angry', 'happy')");
        run("CREATE TABLE people (id int PRIMARY KEY, mood mood, level int, reason text)");
        run("SELECT invariants.require_not_null('people', 'reason', 'mood', ARRAY['angry'])");
        run("SELECT invariants.require_on_set('people', 'level', 'reason', ARRAY['01', '2'])");
        assert_eq!(
            sqlstate_of("INSERT INTO people VALUES (1, 'angry', NULL, NULL)"),
            "23514"
        );
        run("INSERT INTO people VALUES (1, 'angry', 1, 'traffic')"); // '01' means 1
        assert_eq!(sqlstate_of("INSERT INTO people VALUES (2, 'calm', 3, 'rain')"), "23514");
        assert_eq!(count("SELECT count(*) FROM people"), 1);
    }

    #[pg_test]
    fn custom_message_replaces_the_text() {
        run("CREATE TABLE t_msg (id int PRIMARY KEY, status text, sent_at timestamptz)");
        run("SELECT invariants.require_not_null('t_msg', 'sent_at', 'status', ARRAY['sent'], 'sent_needs_time', 'a sent message needs sent_at')");
        let error = error_of("INSERT INTO t_msg VALUES (1, 'sent', NULL)").expect("refused");
        assert_eq!(error.message, "a sent message needs sent_at");
        assert_eq!(error.constraint, "sent_needs_time");
        assert!(error.detail.contains("Failing row key: (id)=(1)"), "{error:?}");
    }

    #[pg_test]
    fn rules_on_two_tables_and_dropping_one() {
        prospects("p4");
        run("CREATE TABLE t_other (id int PRIMARY KEY, a text, b text)");
        run("SELECT invariants.require_not_null('t_other', 'b', 'a', ARRAY['x'])");
        assert_eq!(sqlstate_of("INSERT INTO t_other VALUES (1, 'x', NULL)"), "23514");
        assert_eq!(
            sqlstate_of("INSERT INTO p4 (status) VALUES ('connection_request_sent')"),
            "23514"
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.rules WHERE tbl = 'p4'::regclass"),
            3
        );

        run("SELECT invariants.drop_rule('p4', 'contacted_at_required_when_status')");
        run("INSERT INTO p4 (status) VALUES ('connection_request_sent')");
        assert_eq!(sqlstate_of("INSERT INTO t_other VALUES (2, 'x', NULL)"), "23514");
        // The trigger now fires on the remaining rules' columns only.
        let columns = text(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'p4'::regclass AND tgname = 'invariants_rules'",
        );
        assert!(columns.contains("UPDATE OF contacted_at, status"), "{columns}");
        run("SELECT invariants.drop_rule('p4', 'status_allowed_when_contacted_at_set')");
        run("SELECT invariants.drop_rule('p4', 'contacted_at_write_once')");
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'p4'::regclass AND tgname = 'invariants_rules'"),
            0
        );
        assert_eq!(
            sqlstate_of("SELECT invariants.drop_rule('p4', 'contacted_at_write_once')"),
            "42704"
        );
    }

    #[pg_test]
    fn update_of_other_columns_does_not_call_the_trigger() {
        prospects("p5");
        run("INSERT INTO p5 (status) SELECT 'pending' FROM generate_series(1, 10)");
        run("SET LOCAL track_functions = 'all'");
        let calls =
            || count("SELECT coalesce(pg_stat_get_xact_function_calls('invariants.enforce_rules'::regproc), 0)");
        let before = calls();
        run("UPDATE p5 SET note = 'hello'");
        assert_eq!(
            calls(),
            before,
            "an UPDATE of other columns must not fire the rules trigger"
        );
        run("UPDATE p5 SET status = 'pending'");
        assert_eq!(calls(), before + 10);
    }

    #[pg_test]
    fn renamed_rule_columns_change_nothing_and_dropped_ones_fail_closed() {
        run("CREATE TABLE t_ren (id int PRIMARY KEY, status text, done_at timestamptz, note text)");
        run(
            "SELECT invariants.require_not_null('t_ren', 'done_at', 'status', ARRAY['done'],
                 repair => '{\"set\": {\"status\": \"open\"}, \"touch\": [\"done_at\"]}')",
        );
        run("ALTER TABLE t_ren RENAME COLUMN done_at TO finished_at");
        run("ALTER TABLE t_ren RENAME COLUMN status TO state");
        run("ALTER TABLE t_ren RENAME TO t_renamed");
        let error = error_of("INSERT INTO t_renamed VALUES (1, 'done', NULL)").expect("refused");
        assert_eq!(error.sqlstate, "23514");
        assert!(
            error.detail.contains("finished_at is NULL while state = 'done'"),
            "{error:?}"
        );
        run("INSERT INTO t_renamed VALUES (1, 'open', NULL)");
        assert_eq!(
            text("SELECT spec->>'column' || ' ' || (spec->'repair'->'touch'->>0) FROM invariants.rules WHERE name = 'done_at_required_when_status'"),
            "finished_at finished_at"
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE severity = 'error'"),
            0
        );

        // Dropping a rule column needs CASCADE (the trigger depends on it);
        // the trigger comes back, so every write fails closed until the
        // rule is fixed, and health reports the broken rule.
        run("CREATE TABLE t_drop (id int PRIMARY KEY, status text, done_at timestamptz)");
        run("SELECT invariants.require_not_null('t_drop', 'done_at', 'status', ARRAY['done'])");
        assert_eq!(sqlstate_of("ALTER TABLE t_drop DROP COLUMN done_at"), "2BP01");
        run("ALTER TABLE t_drop DROP COLUMN done_at CASCADE");
        assert_eq!(sqlstate_of("INSERT INTO t_drop VALUES (1, 'open')"), "42703");
        let health = text("SELECT invariants.health()::text");
        assert!(health.contains("\"state\": \"broken\""), "{health}");
        run("SELECT invariants.drop_rule('t_drop', 'done_at_required_when_status')");
        run("INSERT INTO t_drop VALUES (1, 'open')");
    }

    #[pg_test]
    fn table_with_dropped_columns_before_the_rule() {
        run("CREATE TABLE t_gap (a int, junk1 text, id int PRIMARY KEY, junk2 text, status text, sent_at timestamptz)");
        run("ALTER TABLE t_gap DROP COLUMN junk1, DROP COLUMN junk2, DROP COLUMN a");
        run("SELECT invariants.require_not_null('t_gap', 'sent_at', 'status', ARRAY['sent'])");
        assert_eq!(
            sqlstate_of("INSERT INTO t_gap (id, status) VALUES (1, 'sent')"),
            "23514"
        );
        run("INSERT INTO t_gap (id, status, sent_at) VALUES (1, 'sent', now())");
        assert_eq!(count("SELECT count(*) FROM t_gap"), 1);
    }

    #[pg_test]
    fn rules_hold_in_every_partition_including_ones_attached_later() {
        run(
            "CREATE TABLE t_part (id int, region text, status text, sent_at timestamptz, PRIMARY KEY (id, region))
             PARTITION BY LIST (region)",
        );
        run("CREATE TABLE t_part_eu PARTITION OF t_part FOR VALUES IN ('eu')");
        run("SELECT invariants.require_not_null('t_part', 'sent_at', 'status', ARRAY['sent'])");
        let error = error_of("INSERT INTO t_part VALUES (1, 'eu', 'sent', NULL)").expect("refused");
        assert_eq!(error.constraint, "sent_at_required_when_status");
        assert_eq!(error.table, "t_part");
        // A partition with another column order, attached later.
        run("CREATE TABLE t_part_us (sent_at timestamptz, status text, region text NOT NULL, id int NOT NULL)");
        run("ALTER TABLE t_part ATTACH PARTITION t_part_us FOR VALUES IN ('us')");
        assert_eq!(
            sqlstate_of("INSERT INTO t_part VALUES (2, 'us', 'sent', NULL)"),
            "23514"
        );
        assert_eq!(
            sqlstate_of("INSERT INTO t_part_us (id, region, status) VALUES (3, 'us', 'sent')"),
            "23514"
        );
        run("INSERT INTO t_part VALUES (2, 'us', 'sent', now())");
        assert_eq!(sqlstate_of("UPDATE t_part SET sent_at = NULL"), "23514");
        // Rules belong on the partitioned table, not on a partition.
        assert_eq!(
            sqlstate_of("SELECT invariants.write_once('t_part_us', 'sent_at')"),
            "42809"
        );
        // Detection covers every partition.
        run("SELECT invariants.drop_rule('t_part', 'sent_at_required_when_status')");
        run("INSERT INTO t_part VALUES (5, 'eu', 'sent', NULL), (6, 'us', 'sent', NULL)");
        run("SELECT invariants.require_not_null('t_part', 'sent_at', 'status', ARRAY['sent'])");
        assert_eq!(count("SELECT violating FROM invariants.violations('t_part')"), 2);
    }

    /// 73 prospects of which 53 are corrupt, as in the incident report.
    fn incident_rows(table: &str) {
        run(&format!(
            "CREATE TABLE {table} (id serial PRIMARY KEY, campaign_id int, status text NOT NULL DEFAULT 'pending',
                                   contacted_at timestamptz, updated_at timestamptz)"
        ));
        run(&format!(
            "INSERT INTO {table} (campaign_id, status, contacted_at)
             SELECT 1 + i % 3, 'connection_request_sent', NULL FROM generate_series(1, 53) i
             UNION ALL SELECT 1, 'connected', now() FROM generate_series(1, 10)
             UNION ALL SELECT 2, 'pending', NULL FROM generate_series(1, 10)"
        ));
        run(&format!(
            "SELECT invariants.require_not_null('{table}', 'contacted_at', 'status', ARRAY['connection_request_sent'],
                    repair => '{{\"set\": {{\"status\": \"pending\"}}, \"touch\": [\"updated_at\"], \"group_by\": \"campaign_id\"}}')"
        ));
        run(&format!(
            "SELECT invariants.require_on_set('{table}', 'status', 'contacted_at', {POST_CONTACT})"
        ));
        run(&format!("SELECT invariants.write_once('{table}', 'contacted_at')"));
    }

    #[pg_test]
    fn violations_and_violating_rows_find_the_legacy_corrupt_rows() {
        incident_rows("p6");
        let (rule, violating, total) = Spi::get_three::<String, i64, i64>(
            "SELECT rule, violating, total FROM invariants.violations('p6') WHERE violating > 0",
        )
        .unwrap();
        assert_eq!(rule.as_deref(), Some("contacted_at_required_when_status"));
        assert_eq!((violating, total), (Some(53), Some(73)));
        assert_eq!(
            text("SELECT pct::text FROM invariants.violations('p6') WHERE violating > 0"),
            "72.60"
        );
        // One row per detectable rule: write_once is about changes.
        assert_eq!(count("SELECT count(*) FROM invariants.violations('p6')"), 2);
        assert_eq!(
            count("SELECT count(*) FROM invariants.violating_rows('p6', 'contacted_at_required_when_status')"),
            53
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.violating_rows('p6', 'contacted_at_required_when_status', 5)"),
            5
        );
        assert_eq!(
            text("SELECT key::text FROM invariants.violating_rows('p6', 'contacted_at_required_when_status', 1)"),
            "{\"id\": 1}"
        );
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.violating_rows('p6', 'contacted_at_write_once')"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.violating_rows('p6', 'nope')"),
            "42704"
        );
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.violating_rows('p6', NULL, -1)"),
            "22023"
        );
    }

    #[pg_test]
    fn repair_fixes_rows_logs_previous_images_and_can_be_dry_run() {
        incident_rows("p7");
        let dry = Spi::get_two::<i64, Vec<String>>(
            "SELECT fixed_count, group_ids FROM invariants.repair('p7', dry_run => true)",
        )
        .unwrap();
        assert_eq!(dry, (Some(53), Some(vec!["1".into(), "2".into(), "3".into()])));
        assert_eq!(
            count("SELECT count(*) FROM p7 WHERE status = 'connection_request_sent'"),
            53
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'REPAIR'"),
            0
        );

        let fixed = Spi::get_two::<i64, Vec<String>>("SELECT fixed_count, group_ids FROM invariants.repair()").unwrap();
        assert_eq!(fixed, (Some(53), Some(vec!["1".into(), "2".into(), "3".into()])));
        assert_eq!(
            count("SELECT count(*) FROM p7 WHERE status = 'connection_request_sent'"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM p7 WHERE status = 'pending' AND updated_at IS NOT NULL"),
            53
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM invariants.audit_log WHERE op = 'REPAIR' AND tbl = 'p7'::regclass
                      AND row_data->>'status' = 'connection_request_sent' AND row_data->>'updated_at' IS NULL"
            ),
            53
        );
        assert_eq!(
            count("SELECT sum(violating)::bigint FROM invariants.violations('p7')"),
            0
        );
        // Nothing left: a second repair fixes nothing.
        assert_eq!(count("SELECT fixed_count FROM invariants.repair('p7')"), 0);
    }

    #[pg_test]
    fn repair_rejects_bad_arguments() {
        incident_rows("p8");
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.repair('p8', 'status_allowed_when_contacted_at_set')"),
            "22023"
        );
        assert_eq!(sqlstate_of("SELECT * FROM invariants.repair('p8', 'nope')"), "42704");
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.repair('p8', dry_run => NULL)"),
            "22004"
        );
        assert_eq!(
            count("SELECT count(*) FROM p8 WHERE status = 'connection_request_sent'"),
            53
        );
    }

    #[pg_test]
    fn health_reports_score_status_rules_and_recommendations() {
        incident_rows("p9");
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(health["health_score"], 27);
        assert_eq!(health["status"], "critical");
        assert_eq!(health["rows"]["violating"], 53);
        let rules = health["rules"].as_array().unwrap();
        assert!(rules
            .iter()
            .any(|r| r["rule"] == "contacted_at_required_when_status" && r["violating"] == 53));
        let recommendations = health["recommendations"].to_string();
        assert!(recommendations.contains("invariants.repair('public.p9', 'contacted_at_required_when_status')"));

        run("SELECT * FROM invariants.repair()");
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(health["health_score"], 100);
        assert_eq!(health["status"], "healthy");

        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE p9 DISABLE TRIGGER invariants_rules; RESET invariants.allow_drop");
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        let protections = health["protections"].to_string();
        assert!(protections.contains("disabled"), "{protections}");
        assert!(health["recommendations"]
            .to_string()
            .contains("ENABLE TRIGGER invariants_rules"));
    }

    #[pg_test]
    fn degraded_below_five_percent() {
        run("CREATE TABLE t_deg (id int PRIMARY KEY, status text, sent_at timestamptz)");
        run("INSERT INTO t_deg SELECT i, CASE WHEN i <= 3 THEN 'sent' ELSE 'new' END, NULL FROM generate_series(1, 100) i");
        run("SELECT invariants.require_not_null('t_deg', 'sent_at', 'status', ARRAY['sent'])");
        let health = Spi::get_one::<pgrx::JsonB>("SELECT invariants.health()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(health["status"], "degraded");
        assert_eq!(health["health_score"], 97);
    }

    #[pg_test]
    fn schedule_repair_needs_pg_cron_and_registers_a_job() {
        let error = error_of("SELECT invariants.schedule_repair()").expect("no pg_cron yet");
        assert_eq!(error.sqlstate, "55000");
        assert!(error.message.contains("pg_cron"), "{error:?}");
        assert_eq!(
            sqlstate_of("SELECT invariants.schedule_repair('every now and then')"),
            "22023"
        );
        assert_eq!(sqlstate_of("SELECT invariants.schedule_repair(NULL)"), "22004");
        // pg_cron has no build for every Postgres version this is tested on
        // (scripts/test says which): there, the job itself is not tested.
        if count("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'") == 0 {
            return;
        }
        run("CREATE EXTENSION pg_cron");
        let job = Spi::get_one::<i64>("SELECT invariants.schedule_repair('*/5 * * * *')")
            .unwrap()
            .unwrap();
        assert!(job > 0);
        assert_eq!(
            text("SELECT schedule FROM cron.job WHERE jobname = 'pg_invariants_repair'"),
            "*/5 * * * *"
        );
        assert!(
            text("SELECT command FROM cron.job WHERE jobname = 'pg_invariants_repair'").contains("invariants.repair()")
        );
        // Again: the same job, new schedule.
        run("SELECT invariants.schedule_repair('@hourly')");
        assert_eq!(
            count("SELECT count(*) FROM cron.job WHERE jobname = 'pg_invariants_repair'"),
            1
        );
        assert!(Spi::get_one::<bool>("SELECT invariants.unschedule_repair()")
            .unwrap()
            .unwrap());
        assert_eq!(
            count("SELECT count(*) FROM cron.job WHERE jobname = 'pg_invariants_repair'"),
            0
        );
        assert!(!Spi::get_one::<bool>("SELECT invariants.unschedule_repair()")
            .unwrap()
            .unwrap());
    }

    #[pg_test]
    fn bad_arguments_are_refused_and_change_nothing() {
        run(
            "CREATE TABLE t_bad (id int PRIMARY KEY, status text, sent_at timestamptz, n int, j json,
                                 g int GENERATED ALWAYS AS (n + 1) STORED)",
        );
        run("CREATE TABLE t_bad_child (id int PRIMARY KEY, a int, b int)");
        run("CREATE VIEW v_bad AS SELECT * FROM t_bad");
        let cases = [
            ("SELECT invariants.require_not_null('nope', 'sent_at', 'status', ARRAY['x'])", "42P01"),
            ("SELECT invariants.require_not_null(NULL, 'sent_at', 'status', ARRAY['x'])", "22004"),
            ("SELECT invariants.require_not_null('v_bad', 'sent_at', 'status', ARRAY['x'])", "42809"),
            ("SELECT invariants.require_not_null('t_bad', 'nope', 'status', ARRAY['x'])", "42703"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'nope', ARRAY['x'])", "42703"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY[]::text[])", "22023"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', NULL)", "22004"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x', NULL])", "22004"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'n', ARRAY['seven'])", "42804"),
            ("SELECT invariants.require_on_set('t_bad', 'n', 'sent_at', ARRAY['x'])", "42804"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"set\": {\"nope\": 1}}')", "42703"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"set\": {\"n\": \"x\"}}')", "42804"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"set\": {}}')", "22023"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"sett\": {}}')", "22023"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"set\": {\"n\": 1}, \"touch\": [\"status\"]}')", "42804"),
            ("SELECT invariants.write_once('t_bad', 'sent_at', 'forever')", "22023"),
            ("SELECT invariants.allow_transitions('t_bad', 'status', '{}')", "22023"),
            ("SELECT invariants.allow_transitions('t_bad', 'status', '[\"a\"]')", "22023"),
            ("SELECT invariants.allow_transitions('t_bad', 'n', '{\"1\": [\"two\"]}')", "42804"),
            ("SELECT invariants.add_rule('t_bad', 'r', 'no_such_kind', '{}')", "22023"),
            ("SELECT invariants.add_rule('t_bad', 'r', 'write_once', '{\"colum\": \"sent_at\"}')", "22023"),
            ("SELECT invariants.add_rule('t_bad', 'r', 'write_once', '[]')", "22023"),
            ("SELECT invariants.add_rule('t_bad', 'r', 'write_once', NULL)", "22004"),
            ("SELECT invariants.add_rule('t_bad', '', 'write_once', '{\"column\": \"sent_at\"}')", "22023"),
            ("SELECT invariants.drop_rule('t_bad', 'nope')", "42704"),
            ("SELECT invariants.add_rule('t_bad', 'r', NULL, '{\"column\": \"sent_at\"}')", "22004"),
            ("SELECT invariants.add_rule('t_bad', NULL, 'write_once', '{\"column\": \"sent_at\"}')", "22004"),
            ("SELECT invariants.write_once('t_bad', 'sent_at', mode => NULL)", "22004"),
            ("SELECT invariants.allow_transitions('t_bad', 'status', NULL)", "22004"),
            ("SELECT invariants.require_not_null('t_bad', '', 'status', ARRAY['x'])", "22023"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'status', ARRAY['x'], repair => '{\"set\": {\"g\": 1}}')", "428C9"),
            ("SELECT invariants.require_not_null('t_bad', 'sent_at', 'j', ARRAY['{}'])", "42883"),
            ("SELECT * FROM invariants.repair(rule => 'nope')", "42704"),
            ("SELECT * FROM invariants.violating_rows('t_bad', NULL, NULL)", "22004"),
            (
                "SELECT invariants.add_rule('t_bad', 'c', 'require_count',
                        '{\"count_column\": \"n\", \"child\": \"t_bad_child\", \"fk_columns\": [\"a\", \"b\"], \"parent_columns\": [\"id\"]}')",
                "42830",
            ),
            (
                "SELECT invariants.add_rule('t_bad', 'c', 'require_count',
                        '{\"count_column\": \"n\", \"child\": \"t_bad_child\", \"fk_columns\": [\"a\"], \"message\": \" \"}')",
                "22023",
            ),
            ("SELECT invariants.enable_audit(2147483647::oid::regclass)", "42P01"),
            ("SELECT invariants.enable_audit('invariants.audit_rows')", "22023"),
        ];
        for (sql, expected) in cases {
            let error = error_of(sql).unwrap_or_else(|| panic!("expected {expected} from {sql}"));
            assert_eq!(error.sqlstate, expected, "{sql}: {error:?}");
        }
        let error = error_of("SELECT invariants.require_not_null('t_bad', 'nope', 'status', ARRAY['x'])").unwrap();
        assert!(
            error.message.contains("argument column") && error.message.contains("\"nope\""),
            "{error:?}"
        );
        let error =
            error_of("SELECT invariants.add_rule('t_bad', 'r', 'write_once', '{\"colum\": \"sent_at\"}')").unwrap();
        assert!(error.message.contains("colum"), "{error:?}");

        run("SELECT invariants.write_once('t_bad', 'sent_at')");
        let error = error_of("SELECT invariants.write_once('t_bad', 'sent_at')").expect("duplicate");
        assert_eq!(error.sqlstate, "42710");
        assert!(error.message.contains("sent_at_write_once"), "{error:?}");
        assert_eq!(
            count("SELECT count(*) FROM invariants.rule_definitions WHERE tbl = 't_bad'::regclass"),
            1
        );
    }

    #[pg_test]
    fn add_rule_general_form_matches_the_shorthand() {
        run("CREATE TABLE t_gen (id int PRIMARY KEY, status text, sent_at timestamptz)");
        let name = text(
            r#"SELECT invariants.add_rule('t_gen', 'sent_needs_time', 'require_not_null',
                   '{"column": "sent_at", "when_column": "status", "when_values": ["sent"]}')"#,
        );
        assert_eq!(name, "sent_needs_time");
        assert_eq!(sqlstate_of("INSERT INTO t_gen VALUES (1, 'sent', NULL)"), "23514");
        assert_eq!(
            text("SELECT kind FROM invariants.rules WHERE name = 'sent_needs_time'"),
            "require_not_null"
        );
        assert!(
            Spi::get_one::<bool>("SELECT detectable FROM invariants.rules WHERE name = 'sent_needs_time'")
                .unwrap()
                .unwrap()
        );
    }

    #[pg_test]
    fn rules_whose_columns_changed_under_them_fail_closed() {
        run("CREATE TABLE t_chg (id int PRIMARY KEY, status text, sent_at timestamptz, reason text, total int)");
        run("CREATE TABLE t_chg_child (id int PRIMARY KEY, parent int REFERENCES t_chg)");
        run("INSERT INTO t_chg VALUES (1, 'sent', NULL, 'x', 0)");
        run(
            "SELECT invariants.require_not_null('t_chg', 'sent_at', 'status', ARRAY['sent'], name => 'r',
                    repair => '{\"set\": {\"reason\": \"fixed\"}}')",
        );
        run("SELECT invariants.require_count('t_chg', 'total', 't_chg_child', 'parent', name => 'c')");
        // The column a repair sets is gone: repair says so.
        run("ALTER TABLE t_chg DROP COLUMN reason");
        let error = error_of("SELECT * FROM invariants.repair('t_chg')").expect("repair must fail");
        assert_eq!(error.sqlstate, "42703", "{error:?}");
        assert!(error.message.contains("reason"), "{error:?}");
        // The count column is gone: writes to the child fail closed, and
        // asking for the rule's rows says why.
        run("ALTER TABLE t_chg DROP COLUMN total CASCADE");
        assert_eq!(
            sqlstate_of(
                "DO $d$ BEGIN INSERT INTO t_chg_child VALUES (1, 1); PERFORM invariants.check_counts(); END $d$"
            ),
            "42703"
        );
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.violating_rows('t_chg', 'c')"),
            "42703"
        );
        // The child's key column is gone: its writes fail closed at once.
        run("ALTER TABLE t_chg_child DROP COLUMN parent CASCADE");
        let error = error_of("INSERT INTO t_chg_child VALUES (2)").expect("fails closed");
        assert_eq!(error.sqlstate, "42703", "{error:?}");
        assert_eq!(error.constraint, "c");
        // The rule's values no longer fit its column's type: an enum value
        // renamed (Postgres itself refuses to change the type of a column
        // the rules trigger fires on).
        run("CREATE TYPE t_chg_state AS ENUM ('new', 'sent')");
        run("CREATE TABLE t_enum (id int PRIMARY KEY, state t_chg_state, sent_at timestamptz)");
        run("SELECT invariants.require_not_null('t_enum', 'sent_at', 'state', ARRAY['sent'])");
        run("ALTER TYPE t_chg_state RENAME VALUE 'sent' TO 'dispatched'");
        let error = error_of("INSERT INTO t_enum VALUES (2, 'new', NULL)").expect("fails closed");
        assert_eq!(error.sqlstate, "42804", "{error:?}");
        assert!(error.message.contains("no longer takes"), "{error:?}");
    }

    #[pg_test]
    fn the_extensions_trigger_functions_refuse_other_trigger_kinds() {
        run("CREATE TABLE t_mis (id int PRIMARY KEY)");
        let misuses = [
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_delete()",
            "CREATE TRIGGER m BEFORE INSERT ON t_mis FOR EACH STATEMENT EXECUTE FUNCTION invariants.before_truncate()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH ROW EXECUTE FUNCTION invariants.enforce_rules()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH ROW EXECUTE FUNCTION invariants.count_parent_changed()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH ROW EXECUTE FUNCTION invariants.soft_delete_row()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH ROW EXECUTE FUNCTION invariants.soft_delete_keep()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_update()",
            "CREATE TRIGGER m AFTER INSERT ON t_mis FOR EACH STATEMENT EXECUTE FUNCTION invariants.update_budget()",
        ];
        for create in misuses {
            run(create);
            assert_eq!(sqlstate_of("INSERT INTO t_mis VALUES (1)"), "39P01", "{create}");
            run("DROP TRIGGER m ON t_mis");
        }
        assert_eq!(count("SELECT count(*) FROM t_mis"), 0);
    }

    #[pg_test]
    fn detection_needs_select_on_the_table() {
        run("CREATE TABLE t_priv (id int PRIMARY KEY, status text, sent_at timestamptz)");
        run("SELECT invariants.require_not_null('t_priv', 'sent_at', 'status', ARRAY['sent'])");
        run("DROP ROLE IF EXISTS pgi_no_select; CREATE ROLE pgi_no_select");
        run("SET LOCAL ROLE pgi_no_select");
        let error = error_of("SELECT * FROM invariants.violations('t_priv')").expect("refused");
        assert_eq!(error.sqlstate, "42501");
        assert_eq!(error.hint, "Detection needs SELECT on the table.");
        run("RESET ROLE");
    }
}
