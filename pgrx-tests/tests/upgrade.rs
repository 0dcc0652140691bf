//! Upgrades users can trust: a database as 0.1.0 left it (pgrx-tests/
//! fixtures/pg_invariants-0.1.0.sql) is updated with ALTER EXTENSION
//! pg_invariants UPDATE; its catalog then equals a fresh install's, and
//! everything declared before still works.
use std::process::Command;

use pg_invariants_client_tests::{bin, fresh_role, host, installed_version, one, port, sqlstate, TestDb};
use postgres::Client;

/// The extension's catalog, one line per object: functions with their
/// signatures and attributes, tables, views and sequences, columns,
/// indexes, constraints, triggers, event triggers, grants, comments, the
/// tables pg_dump copies, and what belongs to the extension.
const CATALOG: &str = r#"SELECT kind || ' ' || what FROM (
  SELECT 'function' AS kind, p.oid::regprocedure::text || ' (' || pg_get_function_arguments(p.oid) || ') -> '
         || pg_get_function_result(p.oid)
         || ' lang=' || l.lanname || ' vol=' || p.provolatile::text || ' strict=' || p.proisstrict
         || ' secdef=' || p.prosecdef || ' parallel=' || p.proparallel::text
         || ' src=' || CASE WHEN l.lanname = 'c' THEN p.prosrc ELSE md5(p.prosrc) END
         || ' config=' || coalesce(p.proconfig::text, '') || ' acl=' || coalesce(p.proacl::text, 'default')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') AS what
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
   WHERE p.pronamespace = 'invariants'::regnamespace
  UNION ALL
  SELECT 'relation', c.relname || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, 'default')
         || ' options=' || coalesce(c.reloptions::text, '') || ' persistence=' || c.relpersistence::text
         || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
    FROM pg_class c WHERE c.relnamespace = 'invariants'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
  UNION ALL
  SELECT 'column', c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
         || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text || ' compression=' || a.attcompression::text
         || ' num=' || a.attnum || ' acl=' || coalesce(a.attacl::text, '')
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'invariants'::regnamespace AND c.relkind IN ('r', 'v', 'p')
  UNION ALL
  SELECT 'index', pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'invariants'::regnamespace
  UNION ALL
  SELECT 'constraint', c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.relnamespace = 'invariants'::regnamespace
  UNION ALL
  SELECT 'trigger', pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'invariants'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view', c.relname || ' ' || pg_get_viewdef(c.oid)
    FROM pg_class c WHERE c.relnamespace = 'invariants'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT 'sequence', s.seqrelid::regclass::text || ' start=' || s.seqstart || ' inc=' || s.seqincrement
         || ' type=' || s.seqtypid::regtype
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'invariants'::regnamespace
  UNION ALL
  SELECT 'event trigger', e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc || ' tags='
         || coalesce(e.evttags::text, '') || ' enabled=' || e.evtenabled::text
    FROM pg_event_trigger e
  UNION ALL
  SELECT 'config', (SELECT string_agg(x::regclass::text, ',' ORDER BY x::regclass::text) FROM unnest(e.extconfig) x)
    FROM pg_extension e WHERE e.extname = 'pg_invariants'
  UNION ALL
  SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
   WHERE e.extname = 'pg_invariants' AND d.deptype = 'e'
  UNION ALL
  SELECT 'schema acl', coalesce(n.nspacl::text, 'default') FROM pg_namespace n WHERE n.nspname = 'invariants'
) s ORDER BY 1"#;

fn catalog(c: &mut Client) -> Vec<String> {
    c.query(CATALOG, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

#[test]
fn an_updated_0_1_0_database_equals_a_fresh_install_and_keeps_working() {
    // The extension owner let an auditor read the log and prune it.
    fresh_role("pgi_upgrade_auditor");
    let grants = "GRANT SELECT ON invariants.audit_log TO pgi_upgrade_auditor;
                  GRANT EXECUTE ON FUNCTION invariants.prune_audit(interval) TO pgi_upgrade_auditor;";
    let fresh = TestDb::new("pgi_upgrade_fresh");
    fresh.client().batch_execute(grants).unwrap();
    let expected = catalog(&mut fresh.client());

    let old = TestDb::without_extension("pgi_upgrade_old");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pg_invariants-0.1.0.sql");
    let status = Command::new(bin("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &host(),
            "-p",
            &port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", &old.name, "-o", "/dev/null", "-f", fixture])
        .status()
        .expect("run psql");
    assert!(status.success(), "the 0.1.0 database loads");
    let mut c = old.client();
    let version = installed_version(&mut c);
    assert_eq!(version, "0.1.0");
    c.batch_execute(grants).unwrap();
    c.batch_execute("ALTER EXTENSION pg_invariants UPDATE").unwrap();
    let version = installed_version(&mut c);
    assert_eq!(version, "0.2.0");
    let updated = catalog(&mut c);
    let missing: Vec<&String> = expected.iter().filter(|l| !updated.contains(l)).collect();
    let extra: Vec<&String> = updated.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing after update: {missing:#?}\nnot in a fresh install: {extra:#?}"
    );

    // The log kept every entry, and what 0.1.0 restored stays restored.
    let entries: Vec<(String, i64)> = c
        .query(
            "SELECT op, count(*) FROM invariants.audit_log GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let entries: Vec<(&str, i64)> = entries.iter().map(|(op, n)| (op.as_str(), *n)).collect();
    assert_eq!(
        entries,
        [("DELETE", 8), ("REPAIR", 5), ("RESTORE", 1), ("TRUNCATE", 10)]
    );
    assert_eq!(
        one(
            &mut c,
            "SELECT count(*) FROM invariants.lint() WHERE severity = 'error'"
        ),
        0
    );
    let mut auditor = old.client_as("pgi_upgrade_auditor");
    assert_eq!(one(&mut auditor, "SELECT count(*) FROM invariants.audit_log"), 24);
    auditor
        .batch_execute("SELECT invariants.prune_audit('100 years')")
        .unwrap();
    // A loss captured by 0.1.0 comes back, by its transaction; the one
    // 0.1.0 restored already does not come back twice.
    let txids: Vec<String> = c
        .query(
            "SELECT DISTINCT txid::text FROM invariants.audit_log WHERE op = 'DELETE' AND table_name = 'prospects'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut restored = 0i64;
    for txid in &txids {
        for row in c
            .query("SELECT restored FROM invariants.restore($1::text::xid8)", &[txid])
            .unwrap()
        {
            restored += row.get::<_, i64>(0);
        }
    }
    assert_eq!(
        restored, 3,
        "the pending loss of three rows, and nothing of the one restored before"
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM prospects"), 20);
    // A TRUNCATE captured by 0.1.0, with floats and arrays, comes back.
    assert_eq!(
        one(&mut c, "SELECT restored FROM invariants.restore(tbl => 'notes')"),
        10
    );
    assert_eq!(
        one(
            &mut c,
            "SELECT count(*) FROM notes WHERE tags = ARRAY[id, id + 1] AND weight = id / 4.0"
        ),
        10
    );
    // New captures work beside the old ones.
    c.batch_execute("DELETE FROM notes WHERE id = 1").unwrap();
    assert_eq!(
        one(&mut c, "SELECT restored FROM invariants.restore(tbl => 'notes')"),
        1
    );

    // The rules, the count rule, the protection and the soft delete hold.
    assert_eq!(
        sqlstate(c.batch_execute("INSERT INTO prospects (id, status) VALUES (100, 'sent')")),
        "23514"
    );
    assert_eq!(
        sqlstate(c.batch_execute("INSERT INTO import_sessions VALUES (9, 5)")),
        "23514"
    );
    assert_eq!(sqlstate(c.batch_execute("TRUNCATE contracts")), "55000");
    assert_eq!(sqlstate(c.batch_execute("DELETE FROM contracts")), "54000");
    assert_eq!(sqlstate(c.batch_execute("DROP TABLE contracts")), "55000");
    c.batch_execute("DELETE FROM users WHERE id = 1").unwrap();
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"),
        2
    );
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM talent WHERE deleted_at IS NOT NULL"),
        3
    );
    assert_eq!(
        c.execute("UPDATE users SET deleted_at = NULL, email = 'stale' WHERE id = 2", &[])
            .unwrap(),
        0
    );
    assert_eq!(one(&mut c, "SELECT count(*) FROM users"), 2);
    // What 0.2.0 adds works on the updated database: UPDATEs audited and
    // reverted.
    c.batch_execute(
        "CREATE TABLE notes_before AS SELECT * FROM notes;
         SELECT invariants.enable_audit('notes', updates => true);
         UPDATE notes SET weight = -1;",
    )
    .unwrap();
    let rows = one(&mut c, "SELECT count(*) FROM notes");
    assert!(rows > 0);
    assert_eq!(
        one(&mut c, "SELECT count(*) FROM invariants.audit_log WHERE op = 'UPDATE'"),
        rows
    );
    assert_eq!(
        one(
            &mut c,
            "SELECT restored FROM invariants.restore(tbl => 'notes', since => now() - interval '1 minute')"
        ),
        rows
    );
    assert_eq!(
        one(
            &mut c,
            "SELECT count(*) FROM notes n JOIN notes_before b USING (id) WHERE n.weight = b.weight"
        ),
        rows
    );
}
