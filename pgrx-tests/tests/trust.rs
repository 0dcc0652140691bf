//! The trust model: nobody's code runs with more rights than its owner's.
//!
//! `pgi_mallory` owns schema `mallory` and tables carrying every hook
//! Postgres offers, each calling `mallory.rec()`, which records who ran it
//! (and whether that role is a superuser) and, when it can, makes
//! `pgi_mallory` a superuser. Every SQL function of the extension is then
//! called as a superuser and as `pgi_app` (DML grants only), with a
//! `search_path` that puts `evil`, a schema shadowing pg_catalog's
//! operators and functions, first. The recorder must never see a superuser
//! or the extension's owner, and no role may gain anything.
use pg_invariants_client_tests::{fresh_role, TestDb};
use postgres::Client;

const EVIL_PATH: &str = "SET search_path = evil, pg_catalog, public";

/// The roles a test uses, made afresh (roles are shared by the cluster).
fn roles() {
    fresh_role("pgi_mallory");
    fresh_role("pgi_app");
    fresh_role("pgi_alice");
    let mut admin = pg_invariants_client_tests::connect("postgres");
    admin
        .batch_execute(
            "ALTER ROLE pgi_mallory NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS;
             ALTER ROLE pgi_app NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS;
             ALTER ROLE pgi_alice NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS;",
        )
        .unwrap();
}

/// What roles hold, to compare before and after.
fn role_state(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT rolname || ':' || rolsuper || rolcreaterole || rolcreatedb || rolbypassrls || rolreplication
                || ':' || (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)
           FROM pg_roles r WHERE rolname IN ('pgi_mallory', 'pgi_app', 'pgi_alice') ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Creates the recorder, the hostile schema `evil` and mallory's tables,
/// as `pgi_mallory`.
fn hostile_fixture(db: &TestDb) {
    let mut admin = db.client();
    admin
        .batch_execute(&format!("GRANT CREATE ON DATABASE {} TO pgi_mallory", db.name))
        .unwrap();
    let mut m = db.client_as("pgi_mallory");
    m.batch_execute(
        r#"
        CREATE SCHEMA mallory;
        GRANT USAGE ON SCHEMA mallory TO PUBLIC;
        CREATE TABLE mallory.seen (who text, super bool, what text);
        GRANT INSERT, SELECT ON mallory.seen TO PUBLIC;
        -- Records who runs it; makes pgi_mallory a superuser when it can.
        CREATE FUNCTION mallory.rec(what text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
        DECLARE s boolean;
        BEGIN
            SELECT rolsuper INTO s FROM pg_catalog.pg_roles WHERE rolname = current_user;
            INSERT INTO mallory.seen VALUES (current_user, s, what);
            IF s THEN
                EXECUTE 'ALTER ROLE pgi_mallory SUPERUSER';
            END IF;
            RETURN true;
        END $$;
        CREATE FUNCTION mallory.imm(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('immutable'); RETURN $1; END $$;
        CREATE FUNCTION mallory.vol() RETURNS int LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('default'); RETURN 1; END $$;
        CREATE FUNCTION mallory.chk(int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS
            $$ BEGIN RETURN mallory.rec('domain check'); END $$;
        CREATE FUNCTION mallory.pol() RETURNS boolean STABLE LANGUAGE plpgsql AS
            $$ BEGIN RETURN mallory.rec('policy'); END $$;
        CREATE DOMAIN mallory.dpos AS int CHECK (mallory.chk(VALUE));
        CREATE TYPE mallory.mood AS ENUM ('calm', 'angry');
        CREATE FUNCTION mallory.mood_json(mallory.mood) RETURNS json LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('cast to json'); RETURN '"mood"'; END $$;
        CREATE CAST (mallory.mood AS json) WITH FUNCTION mallory.mood_json(mallory.mood);
        CREATE FUNCTION mallory.trg() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM mallory.rec('trigger ' || TG_WHEN || ' ' || TG_OP || ' ' || TG_LEVEL);
            IF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' THEN RETURN OLD; END IF;
            RETURN NEW;
        END $$;

        -- Every table of mallory's carries every hook.
        CREATE PROCEDURE mallory.hooks(tbl regclass) LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE format('CREATE INDEX ON %s ((v + mallory.imm(0)))', tbl);
            EXECUTE format('CREATE INDEX ON %s (id) WHERE mallory.imm(v) > 0', tbl);
            EXECUTE format('CREATE STATISTICS mallory.%I ON (v + mallory.imm(0)), id FROM %s', 'st_' || tbl::oid, tbl);
            EXECUTE format('CREATE TRIGGER b_row BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION mallory.trg()', tbl);
            EXECUTE format('CREATE TRIGGER a_row AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION mallory.trg()', tbl);
            EXECUTE format('CREATE TRIGGER b_stmt BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION mallory.trg()', tbl);
            EXECUTE format('CREATE TRIGGER a_stmt AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION mallory.trg()', tbl);
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
            EXECUTE format('CREATE POLICY p ON %s USING (mallory.pol()) WITH CHECK (mallory.pol())', tbl);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO pgi_app', tbl);
        END $$;

        -- Rules, audit, guards.
        CREATE TABLE mallory.t (
            id int PRIMARY KEY,
            v int DEFAULT mallory.vol(),
            d mallory.dpos,
            status text,
            done_at timestamptz,
            m mallory.mood,
            g int GENERATED ALWAYS AS (mallory.imm(v)) STORED);
        CALL mallory.hooks('mallory.t');
        INSERT INTO mallory.t (id, v, d, status, done_at, m)
            SELECT i, i, i, CASE WHEN i % 2 = 0 THEN 'done' ELSE 'open' END,
                   CASE WHEN i % 4 = 0 THEN now() END, 'calm' FROM generate_series(1, 20) i;
        ANALYZE mallory.t;

        -- Counts.
        CREATE TABLE mallory.parent (id int PRIMARY KEY, v int, n int NOT NULL DEFAULT 0);
        CREATE TABLE mallory.child (id int PRIMARY KEY, v int, parent_id int REFERENCES mallory.parent);
        CALL mallory.hooks('mallory.parent');
        CALL mallory.hooks('mallory.child');
        INSERT INTO mallory.parent VALUES (1, 1, 2), (2, 2, 1);
        INSERT INTO mallory.child VALUES (1, 1, 1), (2, 2, 1), (3, 3, 2);

        -- Soft delete, with a cascade child.
        CREATE TABLE mallory.sp (id int PRIMARY KEY, v int, deleted_at timestamptz);
        CREATE TABLE mallory.sc (id int PRIMARY KEY, v int,
                                 sp_id int REFERENCES mallory.sp ON DELETE CASCADE, deleted_at timestamptz);
        CALL mallory.hooks('mallory.sp');
        CALL mallory.hooks('mallory.sc');
        INSERT INTO mallory.sp SELECT i, i FROM generate_series(1, 10) i;
        INSERT INTO mallory.sc SELECT i, i, i FROM generate_series(1, 10) i;
        ANALYZE mallory.sp; ANALYZE mallory.sc;

        -- Operators and functions shadowing pg_catalog's, for callers who
        -- put this schema first.
        CREATE SCHEMA evil;
        GRANT USAGE ON SCHEMA evil TO PUBLIC;
        CREATE PROCEDURE evil.shadow() LANGUAGE plpgsql AS $$
        DECLARE t text;
        BEGIN
            FOREACH t IN ARRAY ARRAY['int4', 'int8', 'oid', 'text', 'name', 'tid', 'timestamptz', 'regclass', 'xid8', 'jsonb', 'bool'] LOOP
                EXECUTE format('CREATE FUNCTION evil.eq_%1$s(%1$s, %1$s) RETURNS boolean LANGUAGE plpgsql AS
                    $f$ BEGIN PERFORM mallory.rec(''operator = on %1$s''); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$', t);
                EXECUTE format('CREATE OPERATOR evil.= (LEFTARG = %1$s, RIGHTARG = %1$s, FUNCTION = evil.eq_%1$s)', t);
            END LOOP;
        END $$;
        CALL evil.shadow();
        CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('now()'); RETURN pg_catalog.now(); END $$;
        CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('lower()'); RETURN pg_catalog.lower($1); END $$;
        CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('format()'); RETURN ''; END $$;
        CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('to_jsonb()'); RETURN '{}'; END $$;
        CREATE FUNCTION evil.count(int) RETURNS int LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('count()'); RETURN 0; END $$;
        CREATE FUNCTION evil.has_table_privilege(oid, text) RETURNS boolean LANGUAGE plpgsql AS
            $$ BEGIN PERFORM mallory.rec('has_table_privilege()'); RETURN true; END $$;
        "#,
    )
    .unwrap();
}

/// The roles the recorder saw that it must never see: superusers and the
/// extension's owner.
fn forbidden_sightings(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT DISTINCT who || ' ran ' || what FROM mallory.seen
          WHERE super OR who = (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_invariants')
          ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Runs `sql` in a session of `role` with the hostile search path; its
/// error, if any, is returned as text (refusals are expected of `pgi_app`).
fn call(db: &TestDb, role: &str, sql: &str) -> Result<(), String> {
    let mut c = db.client_as(role);
    c.batch_execute(EVIL_PATH).unwrap();
    c.batch_execute(sql).map_err(|e| match e.as_db_error() {
        Some(db) => {
            let context: String = db.where_().unwrap_or_default().chars().take(300).collect();
            format!("{role}: {sql}: {} {} ({context})", db.code().code(), db.message())
        }
        None => format!("{role}: {sql}: {e}"),
    })
}

#[test]
fn no_owner_code_runs_as_a_superuser_or_the_extension_owner() {
    roles();
    let db = TestDb::new("pgi_trust");
    hostile_fixture(&db);
    let mut admin = db.client();
    let roles_before = role_state(&mut admin);

    // Declarations, as a superuser on mallory's tables.
    let declarations = [
        "SELECT invariants.require_not_null('mallory.t', 'done_at', 'status', ARRAY['done'],
                 repair => '{\"set\": {\"status\": \"open\"}}')",
        "SELECT invariants.require_on_set('mallory.t', 'status', 'done_at', ARRAY['done'])",
        "SELECT invariants.write_once('mallory.t', 'done_at')",
        "SELECT invariants.allow_transitions('mallory.t', 'status', '{\"open\": [\"done\"], \"done\": [\"open\"]}')",
        "SELECT invariants.add_rule('mallory.t', 'd_set', 'require_not_null',
                 '{\"column\": \"done_at\", \"when_column\": \"d\", \"when_values\": [\"3\", \"5\"]}')",
        "SELECT invariants.require_count('mallory.parent', 'n', 'mallory.child', 'parent_id')",
        "SELECT invariants.protect('mallory.t', 100, max_update_rows => 1000)",
        "SELECT invariants.enable_audit('mallory.t', updates => true, exclude => '{v}')",
        "SELECT invariants.enable_audit('mallory.parent')",
        "SELECT invariants.enable_audit('mallory.child')",
        "SELECT invariants.enable_soft_delete('mallory.sp')",
        "SELECT invariants.enable_audit('mallory.sp')",
        "SELECT invariants.enable_audit('mallory.sc')",
    ];
    for sql in declarations {
        call(&db, "postgres", sql).unwrap();
    }

    // The triggers, through the application's DML.
    let dml = [
        "INSERT INTO mallory.t (id, v, d, status) VALUES (100, 1, 1, 'open')",
        "UPDATE mallory.t SET status = 'done', done_at = now() WHERE id = 100",
        "UPDATE mallory.t SET d = d + 10, m = 'angry' WHERE id IN (5, 7, 9)",
        "DELETE FROM mallory.t WHERE id IN (1, 3)",
        "BEGIN; INSERT INTO mallory.parent (id, v, n) VALUES (3, 3, 1); INSERT INTO mallory.child VALUES (4, 4, 3); COMMIT",
        "BEGIN; DELETE FROM mallory.child WHERE id = 3; UPDATE mallory.parent SET n = 0 WHERE id = 2; COMMIT",
        "DELETE FROM mallory.sp WHERE id IN (1, 2)",
        "DELETE FROM mallory.sc WHERE id = 5",
        "TRUNCATE mallory.child, mallory.parent",
    ];
    for sql in dml {
        call(&db, "pgi_app", sql).unwrap();
    }
    // TRUNCATE of the protected table is refused for the application, and
    // for its owner runs the capture.
    assert!(call(&db, "pgi_app", "TRUNCATE mallory.t").is_err());
    call(
        &db,
        "pgi_mallory",
        "BEGIN; SET LOCAL invariants.allow_truncate = on; TRUNCATE mallory.t; ROLLBACK",
    )
    .unwrap();

    // Detection, repair, restore, purge, undelete, lint and health, as a
    // superuser and as the application.
    let txid = |op: &str, tbl: &str| -> String {
        db.client()
            .query_one(
                "SELECT txid::text FROM invariants.audit_log WHERE tbl = $2::text::regclass AND op = $1 LIMIT 1",
                &[&op, &tbl],
            )
            .unwrap()
            .get(0)
    };
    let deleted = txid("DELETE", "mallory.t");
    let truncated = txid("TRUNCATE", "mallory.parent");
    // The UPDATE of the domain and enum columns (reverting the other one
    // would break the write-once rule, which restore refuses).
    let updated: String = db
        .client()
        .query_one(
            "SELECT txid::text FROM invariants.audit_log WHERE op = 'UPDATE' AND row_data -> 'new' ? 'm' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let calls = [
        "SELECT invariants.health()".to_string(),
        "SELECT * FROM invariants.violations()".to_string(),
        "SELECT * FROM invariants.violations('mallory.t')".to_string(),
        "SELECT * FROM invariants.violating_rows('mallory.t')".to_string(),
        "SELECT * FROM invariants.violating_rows('mallory.parent')".to_string(),
        "SELECT * FROM invariants.lint()".to_string(),
        "SELECT * FROM invariants.repair(dry_run => true)".to_string(),
        "SELECT * FROM invariants.repair()".to_string(),
        "SELECT invariants.drop_rule('mallory.t', 'd_set')".to_string(),
        format!("SELECT * FROM invariants.restore('{deleted}')"),
        format!("SELECT * FROM invariants.restore('{truncated}')"),
        format!("SELECT * FROM invariants.restore('{updated}')"),
        "SELECT invariants.undelete('mallory.sp', pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 hour')"
            .to_string(),
        "DELETE FROM mallory.sp WHERE id = 3".to_string(),
        "SELECT invariants.purge('mallory.sp', interval '0')".to_string(),
        "SELECT invariants.unprotect('mallory.t')".to_string(),
        "SELECT invariants.disable_audit('mallory.parent')".to_string(),
        "SELECT invariants.disable_soft_delete('mallory.sp')".to_string(),
    ];
    for sql in &calls {
        // The application may be refused (it owns nothing); whatever it
        // can run must not escalate either.
        let _ = call(&db, "pgi_app", sql);
        if !sql.starts_with("DELETE") {
            call(&db, "postgres", sql).unwrap();
        }
    }

    // The UPDATE was reverted (as mallory, with mallory's hooks).
    let mut m = db.client_as("pgi_mallory");
    let angry: i64 = m
        .query_one("SELECT count(*) FROM mallory.t WHERE m = 'angry'", &[])
        .unwrap()
        .get(0);
    assert_eq!(angry, 0);
    let ran: Vec<String> = m
        .query("SELECT DISTINCT who || ': ' || what FROM mallory.seen ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The fixture did fire: the owner's hooks ran as the owner.
    assert!(ran.iter().any(|r| r.starts_with("pgi_mallory: trigger")), "{ran:?}");
    assert!(ran.iter().any(|r| r.starts_with("pgi_mallory: immutable")), "{ran:?}");
    assert_eq!(
        forbidden_sightings(&mut admin),
        Vec::<String>::new(),
        "all sightings: {ran:?}"
    );
    // The hostile schema's code ran only as the role whose own statements
    // named it (the application's DML), never from the extension's queries.
    assert!(
        !ran.iter()
            .any(|r| (r.contains("operator =") || r.contains("()")) && !r.starts_with("pgi_app:")),
        "{ran:?}"
    );
    assert_eq!(role_state(&mut admin), roles_before);
}

/// Reproduction 1: the capture used to plan its query over the table as the
/// extension owner, folding an IMMUTABLE statistics expression as a superuser.
#[test]
fn truncate_capture_plans_as_the_table_owner() {
    roles();
    let db = TestDb::new("pgi_trust_stats");
    let mut admin = db.client();
    admin
        .batch_execute("GRANT CREATE ON DATABASE pgi_trust_stats TO pgi_mallory")
        .unwrap();
    let mut m = db.client_as("pgi_mallory");
    m.batch_execute(
        "CREATE SCHEMA mallory;
         CREATE TABLE mallory.seen (who text, super bool, what text);
         CREATE FUNCTION mallory.rec(what text) RETURNS boolean LANGUAGE sql AS
             $$ INSERT INTO mallory.seen SELECT current_user, rolsuper, what FROM pg_roles WHERE rolname = current_user
                RETURNING true $$;
         CREATE FUNCTION mallory.imm(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
             $$ BEGIN PERFORM mallory.rec('imm'); RETURN $1; END $$;
         CREATE TABLE mallory.solo (id int PRIMARY KEY, v int);
         INSERT INTO mallory.solo SELECT i, i FROM generate_series(1, 50) i;
         CREATE STATISTICS mallory.st ON (v + mallory.imm(0)), id FROM mallory.solo;
         ANALYZE mallory.solo;
         SELECT invariants.enable_audit('mallory.solo');
         TRUNCATE mallory.solo;
         -- A cascade parent with an expression index.
         CREATE TABLE mallory.p (id int PRIMARY KEY);
         CREATE INDEX ON mallory.p ((id + mallory.imm(0)));
         CREATE TABLE mallory.c (id int PRIMARY KEY, p_id int REFERENCES mallory.p ON DELETE CASCADE);
         INSERT INTO mallory.p SELECT generate_series(1, 5);
         INSERT INTO mallory.c SELECT i, i FROM generate_series(1, 5) i;
         ANALYZE mallory.p;
         SELECT invariants.enable_audit('mallory.c');
         DELETE FROM mallory.c WHERE id = 1;
         DELETE FROM mallory.p WHERE id = 2;",
    )
    .unwrap();
    let superuser_sightings: i64 = m
        .query_one(
            "SELECT count(*) FROM mallory.seen WHERE super OR who <> 'pgi_mallory'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(superuser_sightings, 0);
    let is_super: bool = admin
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'pgi_mallory'", &[])
        .unwrap()
        .get(0);
    assert!(!is_super);
    // The capture still happened: 50 truncated rows, and the cascaded child
    // one level deeper than the direct delete.
    let truncated: i64 = admin
        .query_one("SELECT count(*) FROM invariants.audit_log WHERE op = 'TRUNCATE'", &[])
        .unwrap()
        .get(0);
    assert_eq!(truncated, 50);
    let depths: Vec<i32> = admin
        .query(
            "SELECT trigger_depth FROM invariants.audit_log WHERE tbl = 'mallory.c'::regclass ORDER BY (row_data->>'id')::int",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(depths.len(), 2);
    assert_eq!(depths[1], depths[0] + 1, "the cascaded row is one level deeper");
}

/// Reproduction 2: health() cast rule values to the owner's domain, and a
/// superuser's repair() fired the owner's trigger, both as the superuser.
#[test]
fn health_and_repair_of_a_superuser_run_the_owners_code_as_the_owner() {
    roles();
    let db = TestDb::new("pgi_trust_health");
    let mut admin = db.client();
    admin
        .batch_execute("GRANT CREATE ON DATABASE pgi_trust_health TO pgi_mallory")
        .unwrap();
    let mut m = db.client_as("pgi_mallory");
    m.batch_execute(
        "CREATE SCHEMA mallory;
         CREATE TABLE mallory.seen (who text, super bool, what text);
         CREATE FUNCTION mallory.rec(what text) RETURNS boolean LANGUAGE sql AS
             $$ INSERT INTO mallory.seen SELECT current_user, rolsuper, what FROM pg_roles WHERE rolname = current_user
                RETURNING true $$;
         CREATE FUNCTION mallory.chk(int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS
             $$ BEGIN RETURN mallory.rec('chk'); END $$;
         CREATE DOMAIN mallory.level AS int CHECK (mallory.chk(VALUE));
         CREATE FUNCTION mallory.trg() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM mallory.rec('trigger'); RETURN NEW; END $$;
         CREATE TABLE mallory.jobs (id int PRIMARY KEY, level mallory.level, note text);
         CREATE TRIGGER watch BEFORE UPDATE ON mallory.jobs FOR EACH ROW EXECUTE FUNCTION mallory.trg();
         INSERT INTO mallory.jobs VALUES (1, 1, NULL), (2, 2, NULL), (3, 1, NULL);
         SELECT invariants.require_not_null('mallory.jobs', 'note', 'level', ARRAY['1'],
                  repair => '{\"set\": {\"note\": \"fixed\"}}');
         TRUNCATE mallory.seen;",
    )
    .unwrap();
    admin.batch_execute(EVIL_PATH).unwrap();
    let health: serde_json::Value = serde_json::from_str(
        &admin
            .query_one("SELECT invariants.health()::text", &[])
            .unwrap()
            .get::<_, String>(0),
    )
    .unwrap();
    assert_eq!(health["rows"]["violating"], 2, "{health}");
    let fixed: i64 = admin
        .query_one("SELECT sum(fixed_count)::bigint FROM invariants.repair()", &[])
        .unwrap()
        .get(0);
    assert_eq!(fixed, 2);
    let sightings: Vec<(String, bool)> = m
        .query("SELECT who, super FROM mallory.seen", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!sightings.is_empty(), "the domain check and trigger ran");
    assert!(
        sightings.iter().all(|(who, sup)| who == "pgi_mallory" && !sup),
        "{sightings:?}"
    );
}

/// Reproduction 3: soft delete ran its UPDATE as the owner with the
/// caller's search_path, so the owner's trigger called the caller's
/// `lower()` with the owner's rights.
#[test]
fn soft_delete_runs_the_owners_trigger_with_a_pinned_search_path() {
    roles();
    let db = TestDb::new("pgi_trust_soft");
    let mut admin = db.client();
    admin
        .batch_execute(
            "GRANT CREATE ON DATABASE pgi_trust_soft TO pgi_alice, pgi_app; GRANT CREATE ON SCHEMA public TO pgi_alice",
        )
        .unwrap();
    let mut alice = db.client_as("pgi_alice");
    alice
        .batch_execute(
            "CREATE TABLE secrets (v text);
             INSERT INTO secrets VALUES ('alice only');
             CREATE TABLE notes (id int PRIMARY KEY, title text, deleted_at timestamptz);
             INSERT INTO notes VALUES (1, 'A'), (2, 'B');
             CREATE FUNCTION note_changed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM lower(NEW.title);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER changed AFTER UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION note_changed();
             GRANT SELECT, DELETE ON notes TO pgi_app;
             SELECT invariants.enable_soft_delete('notes');",
        )
        .unwrap();
    let mut app = db.client_as("pgi_app");
    app.batch_execute(
        "CREATE SCHEMA appschema;
         CREATE TABLE appschema.loot (who text, v text);
         GRANT INSERT ON appschema.loot TO PUBLIC;
         GRANT USAGE ON SCHEMA appschema TO PUBLIC;
         CREATE FUNCTION appschema.lower(text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO appschema.loot SELECT current_user, v FROM public.secrets;
             RETURN $1;
         EXCEPTION WHEN others THEN
             INSERT INTO appschema.loot VALUES (current_user, 'refused');
             RETURN $1;
         END $$;
         SET search_path = appschema, pg_catalog, public;
         DELETE FROM public.notes WHERE id = 1;",
    )
    .unwrap();
    let loot: i64 = app
        .query_one("SELECT count(*) FROM appschema.loot", &[])
        .unwrap()
        .get(0);
    assert_eq!(loot, 0, "the owner's trigger called the caller's lower()");
    let deleted: i64 = alice
        .query_one("SELECT count(*) FROM notes WHERE deleted_at IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(deleted, 1);
}

/// Reproduction 4: the commit-time count check used an unqualified `=` and
/// counted what the committing user could see.
#[test]
fn count_checks_ignore_the_writers_operators_and_count_every_row() {
    roles();
    let db = TestDb::new("pgi_trust_counts");
    let mut admin = db.client();
    admin
        .batch_execute(
            "CREATE TABLE imports (id int PRIMARY KEY, total int NOT NULL);
             CREATE TABLE items (id int PRIMARY KEY, import_id int REFERENCES imports);
             SELECT invariants.require_count('imports', 'total', 'items', 'import_id');
             INSERT INTO imports VALUES (1, 0);
             GRANT SELECT, INSERT, UPDATE, DELETE ON imports, items TO pgi_app;
             -- Row-level security hides every item from the application.
             ALTER TABLE items ENABLE ROW LEVEL SECURITY;
             CREATE POLICY mine ON items FOR SELECT USING (false);
             CREATE POLICY write ON items FOR INSERT WITH CHECK (true);
             CREATE SCHEMA evil;
             GRANT USAGE, CREATE ON SCHEMA evil TO pgi_app;",
        )
        .unwrap();
    let mut app = db.client_as("pgi_app");
    app.batch_execute(
        "CREATE FUNCTION evil.always(int, int) RETURNS boolean LANGUAGE sql AS 'SELECT true';
         CREATE OPERATOR evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = evil.always);
         SET search_path = evil, pg_catalog, public;",
    )
    .unwrap();
    // A claim of 5 with 1 child: refused, whatever `=` means to the writer.
    let bad = app.batch_execute(
        "BEGIN; INSERT INTO public.items VALUES (1, 1); UPDATE public.imports SET total = 5 WHERE id = 1; COMMIT",
    );
    assert_eq!(pg_invariants_client_tests::sqlstate(bad), "23514");
    app.batch_execute("ROLLBACK").ok();
    // The right count commits, though the writer sees none of the items.
    app.batch_execute(
        "BEGIN; INSERT INTO public.items VALUES (1, 1); UPDATE public.imports SET total = 1 WHERE id = 1; COMMIT",
    )
    .unwrap();
    let total: i32 = admin
        .query_one("SELECT total FROM imports WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 1);
}
