//! Tests of UPDATE capture, its revert by restore, excluded columns, the
//! actor context and the update budget.
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, run, sqlstate_of, text};

    /// Rows of `a` and `b` whose text form differs (by id), both ways.
    fn differing_rows(a: &str, b: &str) -> i64 {
        count(&format!(
            "SELECT count(*) FROM {a} one_row FULL JOIN {b} other_row USING (id)
              WHERE one_row::text IS DISTINCT FROM other_row::text"
        ))
    }

    fn updates() -> i64 {
        count("SELECT count(*) FROM invariants.audit_log WHERE op = 'UPDATE'")
    }

    fn prospects() {
        run("CREATE TABLE prospects (id int PRIMARY KEY, status text, note text, score numeric)");
        run("INSERT INTO prospects SELECT i, 'pending', 'n' || i, i FROM generate_series(1, 10) i");
        run("UPDATE prospects SET status = 'sent' WHERE id = 3");
        run("SELECT invariants.enable_audit('prospects', updates => true)");
    }

    #[pg_test]
    fn an_update_entry_holds_the_key_and_the_changed_columns_only() {
        prospects();
        run("UPDATE prospects SET status = 'sent' WHERE id <= 3");
        assert_eq!(
            updates(),
            2,
            "row 3 already held 'sent': nothing changed, nothing written"
        );
        assert_eq!(
            text("SELECT row_data::text FROM invariants.audit_log WHERE op = 'UPDATE' ORDER BY id LIMIT 1"),
            r#"{"key": {"id": 1}, "new": {"status": "sent"}, "old": {"status": "pending"}}"#
        );
        run("UPDATE prospects SET note = note, score = score");
        assert_eq!(updates(), 2, "an UPDATE that changes nothing writes nothing");
        // Rows of one statement changing different columns: each entry
        // holds its own.
        run("UPDATE prospects SET score = 5, note = CASE WHEN id = 4 THEN 'x' ELSE note END WHERE id IN (4, 5, 6)");
        assert_eq!(
            text(
                "SELECT string_agg(row_data::text, ' | ' ORDER BY (row_data->'key'->>'id')::int)
                   FROM invariants.audit_log WHERE op = 'UPDATE' AND (row_data->'key'->>'id')::int >= 4"
            ),
            concat!(
                r#"{"key": {"id": 4}, "new": {"note": "x", "score": 5}, "old": {"note": "n4", "score": 4}} | "#,
                r#"{"key": {"id": 6}, "new": {"score": 5}, "old": {"score": 6}}"#
            )
        );
        let checks = count(
            "SELECT count(*) FROM invariants.audit_log
              WHERE op = 'UPDATE' AND tbl = 'prospects'::regclass AND txid = pg_current_xact_id()
                AND db_user = current_user AND statement IS NOT NULL AND trigger_depth = 1",
        );
        assert_eq!(checks, 4);
        // DELETE is captured as before: whole rows.
        run("DELETE FROM prospects WHERE id = 10");
        assert_eq!(
            text("SELECT row_data::text FROM invariants.audit_log WHERE op = 'DELETE'"),
            r#"{"id": 10, "note": "n10", "score": 10, "status": "pending"}"#
        );
    }

    #[pg_test]
    fn a_large_update_whose_rows_spill_to_disk_is_captured_and_reverted() {
        run("CREATE TABLE big (id int PRIMARY KEY, n int, pad text)");
        run("INSERT INTO big SELECT i, i, repeat('x', 200) FROM generate_series(1, 20000) i");
        run("SELECT invariants.enable_audit('big', updates => true)");
        // Transition tables and the entries read back spill past work_mem.
        run("SET LOCAL work_mem = '64kB'");
        run("UPDATE big SET n = -n, pad = CASE WHEN id % 2 = 0 THEN 'y' ELSE pad END");
        assert_eq!(updates(), 20000);
        assert_eq!(
            count("SELECT count(DISTINCT capture) FROM invariants.audit_log WHERE op = 'UPDATE'"),
            2
        );
        assert_eq!(
            count("SELECT restored FROM invariants.restore(pg_current_xact_id())"),
            20000
        );
        assert_eq!(
            count("SELECT count(*) FROM big WHERE n = id AND pad = repeat('x', 200)"),
            20000
        );
    }

    #[pg_test]
    fn restore_reverts_updates_of_every_common_type_exactly() {
        // No xml: not every server is built with libxml.
        run("CREATE TYPE mood AS ENUM ('low', 'high')");
        run("CREATE DOMAIN positive AS int CHECK (VALUE > 0)");
        run("CREATE TYPE pair AS (a int, b text)");
        run("CREATE TABLE typed (
                id int PRIMARY KEY, i2 int2, i8 int8, n numeric, f4 real, f8 float8, b bool,
                t text, vc varchar(20), ch char(3), ba bytea, d date, ts timestamp, tz timestamptz,
                iv interval, u uuid, j json, jb jsonb, ia int[], ta text[], m mood, p positive,
                pr pair, pt point, ip inet, r int4range, x tsvector, bits bit varying)");
        run("INSERT INTO typed VALUES
              (1, 1, 9007199254740993, 1.10, '-0', 'NaN', true, 'tëxt', 'v', 'ab', '\\x00ff', '2020-02-29',
               '2020-01-01 10:00', '2020-01-01 10:00+02', '1 day 2 hours', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
               '{\"b\": 1,  \"a\": [1, 2]}', '{\"k\": null}', '[0:1]={1,2}', '{a,NULL}', 'low', 5,
               '(1,x)', '(1.5,2)', '10.0.0.1/8', '[1,5)', 'a:1 b', B'101'),
              (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)");
        run("CREATE TABLE typed_before AS SELECT * FROM typed");
        run("SELECT invariants.enable_audit('typed', updates => true)");
        // Row 1 gets other values (or NULL), row 2 gets values.
        run(
            "UPDATE typed SET i2 = 2, i8 = -1, n = 'NaN', f4 = 0, f8 = 'Infinity', b = false, t = 'other',
                 vc = 'w', ch = 'zz', ba = '\\x01', d = 'infinity', ts = '1999-12-31 23:59:59.999999',
                 tz = NULL, iv = '-3 mons', u = NULL, j = '[]', jb = 'null', ia = '{3}', ta = '{}',
                 m = 'high', p = 7, pr = '(2,)', pt = '(0,0)', ip = '::1', r = 'empty', x = 'c',
                 bits = B'1'
             WHERE id = 1",
        );
        run(
            "UPDATE typed SET i2 = 3, i8 = 4, n = 0.5, f4 = 1.5, f8 = -0.0, b = true, t = '', vc = '',
                 ch = 'c', ba = '', d = '2000-01-01', ts = '2000-01-01', tz = '2000-01-01 00:00+00',
                 iv = '0', u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', j = 'null', jb = '{}', ia = '{}',
                 ta = '{NULL}', m = 'low', p = 1, pr = '(,)', pt = '(1,1)', ip = '1.2.3.4', r = '[1,2]',
                 x = 'd:2A', bits = B''
             WHERE id = 2",
        );
        assert_eq!(differing_rows("typed", "typed_before"), 2);
        assert_eq!(updates(), 2);
        assert_eq!(
            count("SELECT restored FROM invariants.restore(tbl => 'typed', since => now())"),
            2
        );
        assert_eq!(differing_rows("typed", "typed_before"), 0);
        // Each value exactly, where text forms could hide a difference.
        assert_eq!(
            count(
                "SELECT count(*) FROM typed t JOIN typed_before b USING (id)
                  WHERE t.j::text IS NOT DISTINCT FROM b.j::text AND t.ia::text IS NOT DISTINCT FROM b.ia::text
                    AND pg_catalog.float4send(t.f4) IS NOT DISTINCT FROM pg_catalog.float4send(b.f4)
                    AND pg_catalog.float8send(t.f8) IS NOT DISTINCT FROM pg_catalog.float8send(b.f8)"
            ),
            2
        );
    }

    #[pg_test]
    fn a_row_updated_several_times_in_a_transaction_goes_back_to_its_first_value() {
        prospects();
        run("CREATE TABLE prospects_before AS SELECT * FROM prospects");
        run("UPDATE prospects SET status = 'a' WHERE id = 1");
        run("UPDATE prospects SET status = 'b', score = 100 WHERE id = 1");
        run("UPDATE prospects SET status = 'c' WHERE id IN (1, 2)");
        // The key changes too.
        run("UPDATE prospects SET id = 101 WHERE id = 1");
        run("UPDATE prospects SET note = NULL WHERE id = 101");
        assert_eq!(updates(), 6);
        let row = Spi::get_two::<i64, pgrx::JsonB>(
            "SELECT restored, conflicts FROM invariants.restore(pg_current_xact_id())",
        )
        .unwrap();
        assert_eq!(row.0, Some(6));
        assert_eq!(row.1.map(|c| c.0), Some(serde_json::json!([])));
        assert_eq!(differing_rows("prospects", "prospects_before"), 0);
        // Reverting twice changes nothing.
        assert_eq!(
            count("SELECT count(*) FROM invariants.restore(pg_current_xact_id())"),
            0
        );
        assert_eq!(differing_rows("prospects", "prospects_before"), 0);
    }

    #[pg_test]
    fn a_row_changed_since_is_a_conflict_and_keeps_the_later_value() {
        prospects();
        run("UPDATE prospects SET status = 'connection_request_sent' WHERE id <= 5");
        // A later writer whose UPDATE is not captured (the audit of UPDATEs
        // is off meanwhile) changes row 2; row 4 is deleted and comes back.
        run("SELECT invariants.enable_audit('prospects', updates => false)");
        run("UPDATE prospects SET status = 'replied' WHERE id = 2");
        run("UPDATE prospects SET score = 0 WHERE id = 5");
        run("DELETE FROM prospects WHERE id = 4");
        run("SELECT invariants.enable_audit('prospects', updates => true)");
        let row = Spi::get_three::<i64, i64, pgrx::JsonB>(
            "SELECT restored, skipped, conflicts FROM invariants.restore(tbl => 'prospects', since => now())",
        )
        .unwrap();
        // Rows 1, 3 and 5 are reverted (5's other column does not matter),
        // row 2 is a conflict, row 4 is back (DELETE restored first) and
        // then reverted.
        assert_eq!(row.0, Some(1 + 4), "the deleted row, and rows 1, 3, 4 and 5 reverted");
        assert_eq!(row.1, Some(0));
        assert_eq!(row.2.map(|c| c.0), Some(serde_json::json!([{"id": 2}])));
        assert_eq!(
            text("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM prospects WHERE id <= 5"),
            "1:pending,2:replied,3:sent,4:pending,5:pending"
        );
        assert_eq!(count("SELECT score::int8 FROM prospects WHERE id = 5"), 0);
    }

    #[pg_test]
    fn excluded_columns_never_reach_the_log_and_restore_gives_them_their_default() {
        run(
            "CREATE TABLE accounts (id int PRIMARY KEY, email text, password_hash text DEFAULT 'reset-me',
                                    token text NOT NULL, seen timestamptz)",
        );
        run("INSERT INTO accounts SELECT i, 'u' || i || '@x', 'hash' || i, 'tok' || i, NULL FROM generate_series(1, 4) i");
        run("SELECT invariants.enable_audit('accounts', updates => true, exclude => '{password_hash, seen}')");
        run("UPDATE accounts SET password_hash = 'new', email = 'changed@x' WHERE id = 1");
        run("UPDATE accounts SET password_hash = 'only', seen = now() WHERE id = 2");
        assert_eq!(updates(), 1, "a change of excluded columns only writes nothing");
        assert_eq!(
            text("SELECT row_data::text FROM invariants.audit_log WHERE op = 'UPDATE'"),
            r#"{"key": {"id": 1}, "new": {"email": "changed@x"}, "old": {"email": "u1@x"}}"#
        );
        run("DELETE FROM accounts WHERE id = 3");
        assert_eq!(
            count(
                "SELECT count(*) FROM invariants.audit_log
                  WHERE row_data::text LIKE '%hash%' OR row_data ? 'password_hash' OR row_data ? 'seen'"
            ),
            0
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM invariants.audit_capture
                  WHERE 'password_hash' = ANY (columns) OR 'seen' = ANY (columns)"
            ),
            0
        );
        // Restored: the deleted row with the default of the excluded
        // column, the update reverted; the excluded change stays.
        assert_eq!(
            count("SELECT sum(restored)::int8 FROM invariants.restore(tbl => 'accounts', since => now())"),
            2
        );
        assert_eq!(
            text("SELECT string_agg(id || ':' || email || ':' || password_hash, ',' ORDER BY id) FROM accounts"),
            "1:u1@x:new,2:u2@x:only,3:u3@x:reset-me,4:u4@x:hash4"
        );
        // A NOT NULL column without a default cannot be excluded and
        // restored: restore says so and puts nothing back.
        run("SELECT invariants.enable_audit('accounts', exclude => '{token}')");
        run("DELETE FROM accounts WHERE id = 4");
        let problem =
            text("SELECT problem FROM invariants.restore(tbl => 'accounts', since => now()) WHERE problem IS NOT NULL");
        assert!(
            problem.contains("\"token\"") && problem.contains("NOT NULL"),
            "{problem}"
        );
        assert_eq!(count("SELECT count(*) FROM accounts WHERE id = 4"), 0);
    }

    #[pg_test]
    fn an_excluded_column_renamed_stays_excluded() {
        run("CREATE TABLE keys (id int PRIMARY KEY, secret text, label text)");
        run("INSERT INTO keys VALUES (1, 's', 'l')");
        run("SELECT invariants.enable_audit('keys', updates => true, exclude => '{secret}')");
        run("ALTER TABLE keys RENAME COLUMN secret TO api_secret");
        assert_eq!(
            text("SELECT exclude::text FROM invariants.audited_tables"),
            "{api_secret}"
        );
        run("UPDATE keys SET api_secret = 't', label = 'm'");
        assert_eq!(
            text("SELECT row_data::text FROM invariants.audit_log WHERE op = 'UPDATE'"),
            r#"{"key": {"id": 1}, "new": {"label": "m"}, "old": {"label": "l"}}"#
        );
    }

    #[pg_test]
    fn the_actor_context_is_read_from_set_config_and_set_local() {
        prospects();
        run("SET LOCAL invariants.audit_context = 'app.user_id, request.jwt.claim.sub'");
        run("SELECT set_config('app.user_id', '42', true)");
        run("UPDATE prospects SET status = 'a' WHERE id = 1");
        run("SET LOCAL app.user_id = '7'");
        run("SET LOCAL request.jwt.claim.sub = 'auth0|x'");
        run("UPDATE prospects SET status = 'b' WHERE id <= 2");
        run("DELETE FROM prospects WHERE id = 9");
        assert_eq!(
            text("SELECT string_agg(op || ' ' || context::text, ' | ' ORDER BY id) FROM invariants.audit_log"),
            concat!(
                r#"UPDATE {"app.user_id": "42", "request.jwt.claim.sub": null} | "#,
                r#"UPDATE {"app.user_id": "7", "request.jwt.claim.sub": "auth0|x"} | "#,
                r#"UPDATE {"app.user_id": "7", "request.jwt.claim.sub": "auth0|x"} | "#,
                r#"DELETE {"app.user_id": "7", "request.jwt.claim.sub": "auth0|x"}"#
            )
        );
        // Only a superuser sets what is recorded.
        run("CREATE ROLE pgi_app_role");
        run("SET LOCAL ROLE pgi_app_role");
        assert_eq!(sqlstate_of("SET LOCAL invariants.audit_context = 'app.x'"), "42501");
        run("RESET ROLE");
    }

    #[pg_test]
    fn partitions_and_rows_moving_between_them_are_reverted() {
        run("CREATE TABLE events (id int, region text, amount int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)");
        run("CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')");
        run("CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us')");
        run("INSERT INTO events SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i FROM generate_series(1, 6) i");
        run("CREATE TABLE events_before AS SELECT id, region, amount FROM events");
        run("SELECT invariants.enable_audit('events', updates => true)");
        run("UPDATE events SET amount = amount * 10");
        run("UPDATE events SET region = 'us' WHERE id = 2");
        run("UPDATE events_eu SET amount = 0 WHERE id = 4");
        assert_eq!(updates(), 8);
        assert_eq!(
            count("SELECT sum(restored)::int8 FROM invariants.restore(since => now())"),
            8
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM events e FULL JOIN events_before b USING (id)
                  WHERE (e.region, e.amount) IS DISTINCT FROM (b.region, b.amount)"
            ),
            0
        );
        assert_eq!(count("SELECT count(*) FROM events_eu"), 3);
    }

    #[pg_test]
    fn the_update_budget_counts_gives_back_and_honours_only_the_owner() {
        prospects();
        run("SELECT invariants.protect('prospects', max_update_rows => 5)");
        run("UPDATE prospects SET score = score + 1 WHERE id <= 3");
        let error =
            error_of("UPDATE prospects SET score = score + 1 WHERE id BETWEEN 4 AND 6").expect("over the budget");
        assert_eq!(error.sqlstate, "54000");
        assert!(
            error.message.contains("6 rows") && error.message.contains("limit of 5"),
            "{error:?}"
        );
        assert!(error.hint.contains("invariants.max_update_rows"), "{error:?}");
        assert_eq!(
            count("SELECT count(*) FROM prospects WHERE score > id"),
            3,
            "the refused UPDATE changed nothing"
        );
        // A rolled-back subtransaction gives its rows back.
        run("DO $$ BEGIN
                 UPDATE prospects SET note = 'x' WHERE id <= 2;
                 RAISE EXCEPTION 'undo';
             EXCEPTION WHEN raise_exception THEN NULL;
             END $$");
        run("UPDATE prospects SET note = 'y' WHERE id <= 2");
        assert_eq!(sqlstate_of("UPDATE prospects SET note = 'z' WHERE id = 9"), "54000");
        // Rows an UPDATE matches count, changed or not; the owner's switch
        // lifts the limit.
        run("SET LOCAL invariants.max_update_rows = 0");
        run("UPDATE prospects SET note = note");
        run("RESET invariants.max_update_rows");
        // Someone else's switch is refused, not ignored.
        run("CREATE ROLE pgi_clerk");
        run("GRANT SELECT, UPDATE ON prospects TO pgi_clerk");
        run("SET LOCAL ROLE pgi_clerk");
        run("SET LOCAL invariants.max_update_rows = 0");
        let error = error_of("UPDATE prospects SET note = 'w' WHERE id = 10").expect("not the owner");
        assert_eq!(error.sqlstate, "42501");
        assert!(error.message.contains("invariants.max_update_rows"), "{error:?}");
        run("RESET ROLE");
        // restore's own UPDATEs are not counted.
        run("RESET invariants.max_update_rows");
        assert!(count("SELECT sum(restored)::int8 FROM invariants.restore(tbl => 'prospects', since => now())") > 0);
        // Unprotected, nothing is counted; protected without a limit, neither.
        run("SELECT invariants.protect('prospects')");
        run("UPDATE prospects SET note = 'v'");
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgname = 'invariants_update_budget'"),
            0
        );
    }

    #[pg_test]
    fn bad_update_audit_arguments_are_refused_and_change_nothing() {
        run("CREATE TABLE nokey (a int, b text)");
        run("CREATE TABLE withkey (id int PRIMARY KEY, b text)");
        for (sql, state, words) in [
            (
                "SELECT invariants.enable_audit('withkey', updates => NULL)",
                "22004",
                "updates",
            ),
            (
                "SELECT invariants.enable_audit('withkey', exclude => NULL)",
                "22004",
                "exclude",
            ),
            (
                "SELECT invariants.enable_audit('withkey', exclude => ARRAY[NULL])",
                "22004",
                "exclude",
            ),
            (
                "SELECT invariants.enable_audit('withkey', exclude => '{nope}')",
                "42703",
                "nope",
            ),
            (
                "SELECT invariants.enable_audit('withkey', updates => true, exclude => '{id}')",
                "22023",
                "\"id\"",
            ),
            (
                "SELECT invariants.enable_audit('nokey', updates => true)",
                "55000",
                "primary key",
            ),
            (
                "SELECT invariants.protect('withkey', max_update_rows => -1)",
                "22023",
                "max_update_rows",
            ),
            // The log's entries are not readable this way.
            (
                "SELECT * FROM invariants.capture_entries(1) AS e(a int, ord int8)",
                "42501",
                "restore",
            ),
        ] {
            let error = error_of(sql).unwrap_or_else(|| panic!("{sql} must fail"));
            assert_eq!(error.sqlstate, state, "{sql}: {error:?}");
            assert!(error.message.contains(words), "{sql}: {error:?}");
        }
        assert_eq!(count("SELECT count(*) FROM invariants.audited_tables"), 0);
        assert_eq!(count("SELECT count(*) FROM invariants.protected_tables"), 0);
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'invariants%'"),
            0
        );
    }

    #[pg_test]
    fn a_table_that_lost_its_key_refuses_updates_and_lint_says_why() {
        run("CREATE TABLE k (id int CONSTRAINT k_pk PRIMARY KEY, v text)");
        run("INSERT INTO k VALUES (1, 'a')");
        run("SELECT invariants.enable_audit('k', updates => true)");
        run("ALTER TABLE k DROP CONSTRAINT k_pk");
        let error = error_of("UPDATE k SET v = 'b'").expect("no key, no audited UPDATE");
        assert_eq!(error.sqlstate, "55000");
        assert!(error.message.contains("primary key"), "{error:?}");
        assert_eq!(text("SELECT v FROM k"), "a");
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object = 'public.k' AND severity = 'error' AND problem LIKE '%no primary key%'"),
            1
        );
    }

    #[pg_test]
    fn the_capture_trigger_is_guarded_and_checked_like_the_others() {
        prospects();
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'prospects'::regclass AND tgname = 'invariants_audit_update'"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object LIKE '%prospects%'"),
            0
        );
        run("SET LOCAL invariants.allow_drop = on; ALTER TABLE prospects DISABLE TRIGGER invariants_audit_update; RESET invariants.allow_drop");
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object = 'public.prospects: trigger invariants_audit_update'"),
            1
        );
        run("SELECT invariants.reinstall_triggers('prospects')");
        assert_eq!(
            count("SELECT count(*) FROM invariants.lint() WHERE object LIKE '%prospects%'"),
            0
        );
        run("UPDATE prospects SET status = 'z', note = NULL WHERE id = 1");
        assert_eq!(updates(), 1);
        // A repair is logged as REPAIR, not again as UPDATE.
        run(
            "SELECT invariants.require_not_null('prospects', 'note', 'status', ARRAY['z'],
                     repair => '{\"set\": {\"status\": \"pending\"}}')",
        );
        run("SELECT * FROM invariants.repair('prospects')");
        assert_eq!(text("SELECT status FROM prospects WHERE id = 1"), "pending");
        assert_eq!(
            count("SELECT count(*) FROM invariants.audit_log WHERE op = 'REPAIR'"),
            1
        );
        assert_eq!(updates(), 1);
    }
}
