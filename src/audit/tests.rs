//! Tests of DELETE/TRUNCATE capture and restore.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of, text};

    /// Rows of `a` and `b` whose text form differs (by id), both ways.
    fn differing_rows(a: &str, b: &str) -> i64 {
        count(&format!(
            "SELECT count(*) FROM {a} x FULL JOIN {b} y USING (id) WHERE x::text IS DISTINCT FROM y::text"
        ))
    }

    #[pg_test]
    fn delete_is_captured_once_per_row_with_every_column() {
        run("CREATE TABLE a1 (id int PRIMARY KEY, name text)");
        run("INSERT INTO a1 SELECT i, 'n' || i FROM generate_series(1, 5) i");
        run("SELECT invariants.enable_audit('a1')");
        run("SET LOCAL application_name = 'cleanup-script'");
        run("DELETE FROM a1 WHERE id <= 3");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE' AND tbl = 'a1'::regclass"),
            3
        );
        let checks = count(
            "SELECT count(*) FROM invariants.audit_log
              WHERE op = 'DELETE' AND schema_name = 'public' AND table_name = 'a1'
                AND txid = pg_current_xact_id() AND db_user = current_user AND \"session_user\" = session_user
                AND application_name = 'cleanup-script' AND trigger_depth = 1
                AND statement IS NOT NULL AND row_data ? 'name' AND at = now()",
        );
        assert_eq!(checks, 3);
        assert_eq!(
            text("SELECT string_agg(row_data->>'name', ',' ORDER BY id) FROM invariants.audit_log WHERE op = 'DELETE'"),
            "n1,n2,n3"
        );
        run("SET LOCAL invariants.audit_statement = off");
        run("DELETE FROM a1 WHERE id = 4");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'DELETE' AND statement IS NULL"),
            1
        );
    }

    #[pg_test]
    fn cascaded_deletes_are_captured_with_their_depth() {
        run("CREATE TABLE users (id int PRIMARY KEY)");
        run("CREATE TABLE talent (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE)");
        run(
            "CREATE TABLE deal (id int PRIMARY KEY, talent_id int REFERENCES talent ON DELETE CASCADE, amount numeric)",
        );
        run("INSERT INTO users VALUES (1), (2)");
        run("INSERT INTO talent SELECT i, 1 + i % 2 FROM generate_series(1, 20) i");
        run("INSERT INTO deal SELECT i, 1 + i % 20, i * 10.5 FROM generate_series(1, 50) i");
        for t in ["users", "talent", "deal"] {
            run(&format!("SELECT invariants.enable_audit('{t}')"));
        }
        run("DELETE FROM users WHERE id = 1");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'users'::regclass AND trigger_depth = 1"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'talent'::regclass AND trigger_depth = 2"),
            10
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'deal'::regclass AND trigger_depth = 2"),
            25
        );
        assert_eq!(count("SELECT count(*) FROM deal"), 25);

        // One call restores all three tables, parents first.
        let restored = Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT tbl::text, restored, skipped FROM invariants.restore(pg_current_xact_id())",
                    None,
                    &[],
                )
                .unwrap();
            rows.map(|r| {
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<i64>(2).unwrap().unwrap(),
                    r.get::<i64>(3).unwrap().unwrap(),
                )
            })
            .collect::<Vec<_>>()
        });
        assert_eq!(
            restored,
            vec![("users".into(), 1, 0), ("talent".into(), 10, 0), ("deal".into(), 25, 0)]
        );
        assert_eq!(count("SELECT count(*) FROM deal"), 50);
        assert_eq!(count("SELECT count(*) FROM talent"), 20);
        // Restoring twice restores nothing.
        assert_eq!(
            count("SELECT count(*) FROM invariants.restore(pg_current_xact_id())"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM deal"), 50);
    }

    #[pg_test]
    fn every_common_type_survives_delete_and_restore_exactly() {
        run("CREATE TYPE color AS ENUM ('red', 'green')");
        run(
            "CREATE TABLE typed (id int PRIMARY KEY, n numeric(30,10), big numeric, f float8, r real, ts timestamptz,
                                t timestamp(6), d date, iv interval, ints int[], texts text[], j jsonb, c color,
                                b bytea, u uuid, ok boolean, q text, nothing text)",
        );
        run(r#"INSERT INTO typed VALUES
            (1, 12345678901234567890.0123456789, 1e-30, 0.1, 1.5, '2026-11-24 10:11:12.123456+03', '2026-01-01 00:00:00.000001',
             '2026-02-28', '1 year 2 mons 3 days 04:05:06.7', ARRAY[1,NULL,3], ARRAY['a','b"c',NULL], '{"k": [1, 2.50, null], "s": "x"}',
             'green', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 'it''s "quoted" — ünïcødé ✓ 漢字', NULL),
            (2, NULL, 'NaN', 'Infinity', '-Infinity', NULL, NULL, NULL, NULL, '{}', '{}', '[]', NULL, '', NULL, false, '', NULL)"#);
        run("CREATE TABLE typed_copy AS SELECT * FROM typed");
        run("SELECT invariants.enable_audit('typed')");
        run("DELETE FROM typed");
        assert_eq!(count("SELECT count(*) FROM typed"), 0);
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'typed', since => now())"),
            2
        );
        assert_eq!(differing_rows("typed", "typed_copy"), 0);
        // The same through TRUNCATE.
        run("TRUNCATE typed");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'typed', since => now())"),
            2
        );
        assert_eq!(differing_rows("typed", "typed_copy"), 0);
    }

    #[pg_test]
    fn values_jsonb_cannot_carry_come_back_byte_for_byte() {
        run("CREATE TYPE point_tags AS (x float8, tags int[])");
        run("CREATE DOMAIN measure AS float8");
        run(
            "CREATE TABLE inexact (id int PRIMARY KEY, f8 float8, f4 real, m measure, bounded int[], grid int[],
                                   floats float8[], j json, js json[], pt point_tags, pts point_tags[],
                                   jb jsonb, jbs jsonb[], ts timestamptz)",
        );
        run(r#"INSERT INTO inexact VALUES
            (1, '-0', '-0', '-0', '[0:2]={7,8,9}', '[0:1][5:6]={{1,2},{3,4}}', '{-0,1.5,NaN}',
             '{"b": 1,   "a": [1, 2],  "a": "dup"}', ARRAY['{ "x" : 1 }'::json, '[ ]'],
             ROW('-0', '[2:3]={1,2}'), ARRAY[ROW('-0', '{5}')::point_tags],
             'null', ARRAY['null'::jsonb, NULL], '2026-11-24 10:11:12.123456+03'),
            (2, '0', '0', '0', '{7,8,9}', '{{1,2},{3,4}}', '{0}', '  "text"  ', '{}', ROW(0, '{}'), '{}',
             '{"a": null}', '{}', '-infinity'),
            (3, '-1e-300', '1.17549435e-38', '-Infinity', '[-5:-5]={1}', NULL, NULL, 'null', NULL, NULL, NULL,
             NULL, NULL, NULL)"#);
        run("CREATE TABLE inexact_copy AS SELECT * FROM inexact");
        run("SELECT invariants.enable_audit('inexact')");
        run("DELETE FROM inexact");
        // Restore under other settings than the capture's.
        run("SET LOCAL extra_float_digits = -3; SET LOCAL DateStyle = 'SQL, DMY'; SET LOCAL TimeZone = 'Asia/Kathmandu'");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'inexact', since => now())"),
            3
        );
        run("RESET extra_float_digits; RESET DateStyle; RESET TimeZone");
        assert_eq!(differing_rows("inexact", "inexact_copy"), 0);
        assert_eq!(
            count("SELECT count(*) FROM inexact WHERE f8::text = '-0' AND f4::text = '-0' AND m::text = '-0'"),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM inexact WHERE jb = 'null'::jsonb AND jbs[1] = 'null'::jsonb AND jbs[2] IS NULL"
            ),
            1
        );
        assert_eq!(count("SELECT count(*) FROM inexact WHERE jb IS NULL"), 1);
        assert_eq!(
            count("SELECT count(*) FROM inexact WHERE bounded::text = '[0:2]={7,8,9}' AND j::text = '{\"b\": 1,   \"a\": [1, 2],  \"a\": \"dup\"}'"),
            1
        );
        // The same through TRUNCATE.
        run("TRUNCATE inexact");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'inexact', since => now())"),
            3
        );
        assert_eq!(differing_rows("inexact", "inexact_copy"), 0);
    }

    #[pg_test]
    fn row_images_of_scalar_columns_equal_to_jsonb_exactly() {
        // Only scalar columns: the images are built without to_jsonb, and
        // must still be exactly what it returns.
        run("CREATE TYPE mood AS ENUM ('calm', 'upset')");
        run("CREATE DOMAIN positive AS int CHECK (VALUE > 0)");
        run("CREATE DOMAIN label AS text");
        run(
            "CREATE TABLE scalars (id int PRIMARY KEY, s smallint, l bigint, n numeric, n2 numeric(10,2), f float8, r real,
                                   ok boolean, d date, t timestamp, tz timestamptz, tm time, q text, v varchar(20),
                                   c char(5), u uuid, b bytea, ip inet, iv interval, m mood, p positive, lb label, x text)",
        );
        run(r#"INSERT INTO scalars VALUES
            (1, -32768, 9223372036854775807, 12345678901234567890.0123456789, 2.50, 0.1, 1.1, true,
             '2026-02-28', '2026-01-01 00:00:00.000001', '2026-11-24 10:11:12.123456+03', '23:59:59.5',
             'it''s "quoted" \ ünïcødé ✓ 漢字', 'v', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff10',
             '10.1.2.3/8', '1 year 2 mons 3 days 04:05:06.7', 'upset', 7, 'tag', NULL),
            (2, 0, -1, 'NaN', -0.00, 'NaN', '-Infinity', false, 'infinity', '-infinity', 'infinity', '00:00',
             '', '', '', NULL, '', NULL, '0', 'calm', 1, '', ''),
            (3, NULL, NULL, 'Infinity', NULL, -0.0, 1e30, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL, NULL),
            (4, 1, 1, '-Infinity', 1e-3, 1e300, 3.4e38, NULL, '0001-01-01 BC', '2000-01-01', '1999-12-31 23:59:59+14',
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#);
        run("ALTER TABLE scalars DROP COLUMN x");
        run("CREATE TABLE scalars_copy AS SELECT * FROM scalars");
        run("SELECT invariants.enable_audit('scalars')");
        run("DELETE FROM scalars");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE table_name = 'scalars'"),
            4
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM scalars_copy copy JOIN invariants.audit_log a
                    ON a.table_name = 'scalars' AND (a.row_data->>'id')::int = copy.id
                 WHERE a.row_data::text = to_jsonb(copy)::text AND a.row_data = to_jsonb(copy)"
            ),
            4
        );
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'scalars', since => now())"),
            4
        );
        assert_eq!(differing_rows("scalars", "scalars_copy"), 0);
    }

    #[pg_test]
    fn wide_rows_are_captured_and_restored_whole() {
        // Images above the TOAST threshold, in more than one batch.
        run("CREATE TABLE wide (id int PRIMARY KEY, body text, tags text[])");
        run("INSERT INTO wide SELECT i, repeat(md5(i::text), 100 + i % 100), ARRAY[repeat('t', 3000)] FROM generate_series(1, 1200) i");
        run("CREATE TABLE wide_narrow (id int PRIMARY KEY, body text)");
        run("INSERT INTO wide_narrow SELECT id, body FROM wide");
        run("CREATE TABLE wide_copy AS SELECT * FROM wide");
        run("CREATE TABLE wide_narrow_copy AS SELECT * FROM wide_narrow");
        run("SELECT invariants.enable_audit('wide'), invariants.enable_audit('wide_narrow')");
        run("DELETE FROM wide");
        run("DELETE FROM wide_narrow");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE table_name IN ('wide', 'wide_narrow')"),
            2400
        );
        run("SELECT * FROM invariants.restore(since => now())");
        assert_eq!(differing_rows("wide", "wide_copy"), 0);
        assert_eq!(differing_rows("wide_narrow", "wide_narrow_copy"), 0);
        assert_eq!(count("SELECT count(*) FROM wide_narrow"), 1200);
    }

    #[pg_test]
    fn a_log_altered_with_a_required_column_refuses_to_capture() {
        run("CREATE TABLE kept (id int PRIMARY KEY)");
        run("INSERT INTO kept VALUES (1)");
        run("SELECT invariants.enable_audit('kept')");
        run("ALTER TABLE invariants.audit_capture ADD COLUMN reviewer text NOT NULL");
        let error = error_of("DELETE FROM kept").expect("the capture must fail");
        assert_eq!(error.sqlstate, "23502");
        assert!(error.message.contains("reviewer"), "{error:?}");
        assert_eq!(count("SELECT count(*) FROM kept"), 1);
        assert_eq!(count("SELECT count(*) FROM invariants.audit_log"), 0);
    }

    #[pg_test]
    fn truncate_is_captured_for_each_table_it_reaches() {
        run("CREATE TABLE t_a (id int PRIMARY KEY)");
        run("CREATE TABLE t_b (id int PRIMARY KEY)");
        run("CREATE TABLE t_parent (id int PRIMARY KEY)");
        run("CREATE TABLE t_child (id int PRIMARY KEY, parent_id int REFERENCES t_parent)");
        run("INSERT INTO t_a SELECT generate_series(1, 3); INSERT INTO t_b SELECT generate_series(1, 4)");
        run("INSERT INTO t_parent SELECT generate_series(1, 2); INSERT INTO t_child SELECT i, 1 + i % 2 FROM generate_series(1, 6) i");
        for t in ["t_a", "t_b", "t_parent", "t_child"] {
            run(&format!("SELECT invariants.enable_audit('{t}')"));
        }
        run("TRUNCATE t_a");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE' AND tbl = 't_a'::regclass"),
            3
        );
        run("TRUNCATE t_a, t_b");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE' AND tbl = 't_b'::regclass"),
            4
        );
        run("TRUNCATE t_parent CASCADE");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE' AND tbl = 't_child'::regclass"),
            6
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE' AND tbl = 't_parent'::regclass"),
            2
        );
        let restored = count("SELECT sum(restored)::bigint FROM invariants.restore(since => now())");
        assert_eq!(restored, 3 + 4 + 2 + 6);
        assert_eq!(count("SELECT count(*) FROM t_child"), 6);
    }

    #[pg_test]
    fn truncate_above_the_capture_limit_is_refused_and_removes_nothing() {
        run("CREATE TABLE big (id int PRIMARY KEY)");
        run("INSERT INTO big SELECT generate_series(1, 11)");
        run("SELECT invariants.enable_audit('big', truncate_capture_limit => 10)");
        let error = error_of("TRUNCATE big").expect("refused");
        assert_eq!(error.sqlstate, "54000");
        assert!(error.message.contains("more than 10 rows"), "{error:?}");
        assert!(error.hint.contains("truncate_capture_limit"), "{error:?}");
        assert_eq!(error.table, "big");
        assert_eq!(count("SELECT count(*) FROM big"), 11);
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'big'::regclass"),
            0
        );
        // Calling enable_audit again is harmless and raises the limit.
        run("SELECT invariants.enable_audit('big', truncate_capture_limit => 100)");
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'big'::regclass AND tgname IN ('invariants_audit_delete', 'invariants_truncate')"
            ),
            2
        );
        run("TRUNCATE big");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE tbl = 'big'::regclass"),
            11
        );
    }

    #[pg_test]
    fn restore_handles_dropped_and_added_columns_identity_and_generated() {
        run(
            "CREATE TABLE evolving (junk int, id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, price numeric,
                                    doubled numeric GENERATED ALWAYS AS (price * 2) STORED)",
        );
        run("ALTER TABLE evolving DROP COLUMN junk");
        run("INSERT INTO evolving (price) VALUES (10), (20)");
        run("SELECT invariants.enable_audit('evolving')");
        run("DELETE FROM evolving");
        run("ALTER TABLE evolving ADD COLUMN currency text NOT NULL DEFAULT 'EUR'");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'evolving', since => now())"),
            2
        );
        assert_eq!(text("SELECT string_agg(id || ':' || price || ':' || doubled || ':' || currency, ',' ORDER BY id) FROM evolving"),
                   "1:10:20:EUR,2:20:40:EUR");
        // The identity sequence is not set back: new rows do not collide.
        run("INSERT INTO evolving (price) VALUES (30)");
        assert_eq!(count("SELECT count(*) FROM evolving"), 3);
    }

    /// Large captures go back through COPY (a capture of 100 entries or
    /// more whose columns keep their types); each case here is one.
    #[pg_test]
    fn large_captures_come_back_whole_through_copy() {
        run("CREATE TYPE size_t AS ENUM ('s', 'm', 'l')");
        run(
            "CREATE TABLE big (junk int, id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, f8 float8, bounded int[],
                               j json, jb jsonb, sz size_t, at timestamptz, note text, gone text,
                               doubled float8 GENERATED ALWAYS AS (f8 * 2) STORED)",
        );
        run("ALTER TABLE big DROP COLUMN junk");
        run(r#"INSERT INTO big (f8, bounded, j, jb, sz, at, note, gone)
               SELECT CASE WHEN i % 2 = 0 THEN '-0'::float8 ELSE i / 3.0 END, '[0:1]={1,2}', '{"b": 1,  "a": 2}',
                      CASE WHEN i % 3 = 0 THEN 'null'::jsonb END, 'm', '2026-11-30 12:00+05:30'::timestamptz + i * interval '1 s',
                      'ünïcødé ' || i, 'x'
                 FROM generate_series(1, 2500) i"#);
        run("CREATE TABLE big_copy AS SELECT * FROM big");
        run("ALTER TABLE big_copy DROP COLUMN gone");
        run("SELECT invariants.enable_audit('big', truncate_capture_limit => 10000)");
        run("DELETE FROM big");
        // A column dropped and one added since: the images' field of the
        // dropped one is left out, the added one takes its default.
        run("ALTER TABLE big DROP COLUMN gone");
        run("ALTER TABLE big ADD COLUMN currency text NOT NULL DEFAULT 'EUR'");
        run("SET LOCAL TimeZone = 'America/St_Johns'; SET LOCAL client_encoding = 'LATIN1'");
        let (restored, skipped) =
            Spi::get_two::<i64, i64>("SELECT restored, skipped FROM invariants.restore(tbl => 'big', since => now())")
                .unwrap();
        run("RESET TimeZone; RESET client_encoding");
        assert_eq!((restored, skipped), (Some(2500), Some(0)));
        run("ALTER TABLE big DROP COLUMN currency");
        assert_eq!(differing_rows("big", "big_copy"), 0);
        // The same through TRUNCATE (three batches of the log).
        run("TRUNCATE big");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'big', since => now())"),
            2500
        );
        assert_eq!(differing_rows("big", "big_copy"), 0);
    }

    #[pg_test]
    fn restores_on_a_stale_log_and_after_a_large_restore_give_the_rows_back() {
        run("CREATE TABLE many (id bigint PRIMARY KEY, n int, a text, t timestamptz)");
        run(
            "INSERT INTO many SELECT i, i % 7, 'a' || i, '2026-01-01'::timestamptz + i * interval '1 s'
               FROM generate_series(1, 100000) i",
        );
        run("CREATE TABLE many_copy AS SELECT * FROM many");
        // Statistics of an empty log: stale once the rows are in.
        run("ANALYZE invariants.audit_capture; ANALYZE invariants.audit_rows; ANALYZE invariants.audit_restored");
        run("SELECT invariants.enable_audit('many')");
        run("DELETE FROM many");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'many', since => now())"),
            100000
        );
        assert_eq!(differing_rows("many", "many_copy"), 0);
        // Right after that large restore, another.
        run("DELETE FROM many WHERE id % 2 = 0");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'many', since => now())"),
            50000
        );
        assert_eq!(differing_rows("many", "many_copy"), 0);
        // And again: nothing left to restore, nothing changed.
        assert_eq!(
            count("SELECT count(*) FROM invariants.restore(tbl => 'many', since => now())"),
            0
        );
        assert_eq!(differing_rows("many", "many_copy"), 0);
    }

    #[pg_test]
    fn a_logged_type_dropped_since_is_reported_and_shown_as_bytes() {
        run("CREATE TYPE mood_t AS ENUM ('calm', 'upset')");
        run("CREATE TABLE moods (id int PRIMARY KEY, m mood_t)");
        run("INSERT INTO moods VALUES (1, 'calm')");
        run("SELECT invariants.enable_audit('moods')");
        run("DELETE FROM moods");
        run("DROP TABLE moods; DROP TYPE mood_t");
        run("CREATE TABLE moods (id int PRIMARY KEY, m text)");
        let problem = text("SELECT problem FROM invariants.restore(tbl => 'moods', since => now())");
        assert!(problem.contains("no longer exists"), "{problem}");
        assert_eq!(count("SELECT count(*) FROM moods"), 0);
        // The log still shows the entry, the value as its bytes.
        assert_eq!(
            text("SELECT row_data->>'m' FROM invariants.audit_log WHERE op = 'DELETE' AND table_name = 'moods'"),
            "\\x63616c6d"
        );
    }

    #[pg_test]
    fn a_large_capture_whose_keys_exist_again_skips_them() {
        run("CREATE TABLE crowded (id int PRIMARY KEY, v text)");
        run("INSERT INTO crowded SELECT i, 'old' FROM generate_series(1, 300) i");
        run("SELECT invariants.enable_audit('crowded')");
        run("DELETE FROM crowded");
        run("INSERT INTO crowded SELECT i, 'new' FROM generate_series(1, 300, 30) i");
        let (restored, skipped) = Spi::get_two::<i64, i64>(
            "SELECT restored, skipped FROM invariants.restore(tbl => 'crowded', since => now())",
        )
        .unwrap();
        assert_eq!((restored, skipped), (Some(290), Some(10)));
        assert_eq!(count("SELECT count(*) FROM crowded WHERE v = 'new'"), 10);
        assert_eq!(count("SELECT count(*) FROM crowded"), 300);
    }

    #[pg_test]
    fn a_large_capture_goes_back_to_partitions_through_the_tables_triggers_and_rules() {
        run("CREATE TABLE routed (id int, k int, status text, sent_at timestamptz, PRIMARY KEY (id, k)) PARTITION BY LIST (k)");
        run("CREATE TABLE routed_1 PARTITION OF routed FOR VALUES IN (1)");
        run("CREATE TABLE routed_2 PARTITION OF routed FOR VALUES IN (2)");
        run("INSERT INTO routed SELECT i, 1 + i % 2, 'sent', now() FROM generate_series(1, 400) i");
        run("SELECT invariants.enable_audit('routed')");
        run("CREATE TABLE arrivals (id int)");
        run("CREATE FUNCTION note_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO public.arrivals VALUES (NEW.id); RETURN NEW; END $$");
        run("CREATE TRIGGER arrival BEFORE INSERT ON routed FOR EACH ROW EXECUTE FUNCTION note_arrival()");
        run("DELETE FROM routed");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'routed', since => now())"),
            400
        );
        assert_eq!(count("SELECT count(*) FROM routed_1"), 200);
        assert_eq!(count("SELECT count(*) FROM routed_2"), 200);
        assert_eq!(count("SELECT count(*) FROM arrivals"), 400);
        // A rule declared since refuses rows that break it: the restore
        // fails as a whole, with the rule's fields, and nothing is half done.
        run("TRUNCATE routed");
        run("INSERT INTO routed SELECT i, 1 + i % 2, 'sent', NULL FROM generate_series(1, 200) i");
        run("DELETE FROM routed");
        run("SELECT invariants.require_not_null('routed', 'sent_at', 'status', ARRAY['sent'], name => 'sent_needs_time')");
        let error = error_of("SELECT * FROM invariants.restore(tbl => 'routed', since => now())").expect("refused");
        assert_eq!(error.sqlstate, "23514", "{error:?}");
        assert_eq!(error.constraint, "sent_needs_time");
        assert_eq!(count("SELECT count(*) FROM routed"), 0);
    }

    #[pg_test]
    fn restore_of_a_table_alone_brings_back_all_it_lost() {
        run("CREATE TABLE whole (id int PRIMARY KEY)");
        run("INSERT INTO whole SELECT generate_series(1, 4)");
        run("SELECT invariants.enable_audit('whole')");
        run("DELETE FROM whole WHERE id = 1; DELETE FROM whole WHERE id = 2; TRUNCATE whole");
        assert_eq!(count("SELECT restored FROM invariants.restore(tbl => 'whole')"), 4);
        assert_eq!(count("SELECT count(*) FROM whole"), 4);
    }

    #[pg_test]
    fn restore_skips_keys_that_exist_again_and_reports_them() {
        run("CREATE TABLE keyed (id int PRIMARY KEY, v text)");
        run("INSERT INTO keyed VALUES (1, 'old'), (2, 'old')");
        run("SELECT invariants.enable_audit('keyed')");
        run("DELETE FROM keyed");
        run("INSERT INTO keyed VALUES (1, 'new')");
        let (restored, skipped) = Spi::get_two::<i64, i64>(
            "SELECT restored, skipped FROM invariants.restore(tbl => 'keyed', since => now())",
        )
        .unwrap();
        assert_eq!((restored, skipped), (Some(1), Some(1)));
        assert_eq!(
            text("SELECT string_agg(id || v, ',' ORDER BY id) FROM keyed"),
            "1new,2old"
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'RESTORE'"),
            1
        );
    }

    #[pg_test]
    fn restore_puts_back_what_a_repair_changed() {
        run("CREATE TABLE rep (id int PRIMARY KEY, status text, sent_at timestamptz)");
        run("INSERT INTO rep VALUES (1, 'sent', NULL), (2, 'new', NULL)");
        run(
            r#"SELECT invariants.require_not_null('rep', 'sent_at', 'status', ARRAY['sent'], repair => '{"set": {"status": "new"}}')"#,
        );
        run("SELECT * FROM invariants.repair('rep')");
        assert_eq!(text("SELECT status FROM rep WHERE id = 1"), "new");
        // While the rule holds, undoing the repair would break it: refused, nothing changed.
        assert_eq!(
            sqlstate_of("SELECT * FROM invariants.restore(tbl => 'rep', since => now())"),
            "23514"
        );
        assert_eq!(text("SELECT status FROM rep WHERE id = 1"), "new");
        run("SELECT invariants.drop_rule('rep', 'sent_at_required_when_status')");
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'rep', since => now())"),
            1
        );
        assert_eq!(text("SELECT status FROM rep WHERE id = 1"), "sent");
    }

    #[pg_test]
    fn partitioned_tables_are_audited_through_the_parent_and_each_partition() {
        run("CREATE TABLE events (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)");
        run("CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')");
        run("CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us')");
        run("INSERT INTO events SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 10) i");
        run("SELECT invariants.enable_audit('events')");
        run("DELETE FROM events WHERE id <= 4");
        run("DELETE FROM events_us WHERE id = 5");
        run("TRUNCATE events_eu");
        assert_eq!(count("SELECT count(*) FROM invariants.audit_log"), 4 + 1 + 3);
        assert_eq!(count("SELECT count(*) FROM events"), 2);
        assert_eq!(
            count("SELECT sum(restored)::bigint FROM invariants.restore(tbl => 'events', since => now())"),
            8
        );
        assert_eq!(count("SELECT count(*) FROM events"), 10);
    }

    #[pg_test]
    fn audit_bad_arguments() {
        run("CREATE TABLE aud (id int PRIMARY KEY)");
        run("CREATE VIEW aud_v AS SELECT * FROM aud");
        assert_eq!(sqlstate_of("SELECT invariants.enable_audit('nope')"), "42P01");
        assert_eq!(sqlstate_of("SELECT invariants.enable_audit(NULL)"), "22004");
        assert_eq!(sqlstate_of("SELECT invariants.enable_audit('aud_v')"), "42809");
        assert_eq!(sqlstate_of("SELECT invariants.enable_audit('aud', -1)"), "22023");
        assert_eq!(sqlstate_of("SELECT invariants.enable_audit('aud', NULL)"), "22004");
        assert_eq!(sqlstate_of("SELECT * FROM invariants.restore()"), "22004");
        // A table alone: everything it lost and is not back yet (nothing here).
        assert_eq!(count("SELECT count(*) FROM invariants.restore(tbl => 'aud')"), 0);
        assert_eq!(count("SELECT count(*) FROM invariants.audited_tables"), 0);
        // disable is harmless when not enabled, and twice.
        run("SELECT invariants.disable_audit('aud')");
        run("SELECT invariants.enable_audit('aud')");
        run("SELECT invariants.disable_audit('aud')");
        run("SELECT invariants.disable_audit('aud')");
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'aud'::regclass AND NOT tgisinternal"),
            0
        );
        run("INSERT INTO aud VALUES (1); DELETE FROM aud");
        assert_eq!(count("SELECT count(*) FROM invariants.audit_log"), 0);
    }
}
