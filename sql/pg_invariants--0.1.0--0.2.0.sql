-- pg_invariants 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_invariants UPDATE TO '0.2.0').
-- Every change to the extension's SQL objects since 0.1.0 is here. An
-- updated 0.1.0 and a fresh 0.2.0 have the same catalog, and everything
-- declared before keeps working (pgrx-tests/tests/upgrade.rs checks both).
\echo Use "ALTER EXTENSION pg_invariants UPDATE" to load this file. \quit

-- New columns of the settings tables first: the new library's DDL guards
-- read them as soon as this script's statements run.
ALTER TABLE invariants.audited_tables
    ADD COLUMN updates boolean NOT NULL DEFAULT false,
    ADD COLUMN exclude text[] NOT NULL DEFAULT '{}';
ALTER TABLE invariants.protected_tables
    ADD COLUMN max_update_rows bigint CHECK (max_update_rows >= 0);

-- Rule values are checked and compared in the column's own type, as the
-- table's owner: the PL/pgSQL cast helper is gone.
DROP FUNCTION invariants.is_valid_input(text, oid);

-- A count rule's child table by OID, so that renaming it changes nothing.
ALTER TABLE invariants.rule_definitions ADD COLUMN child regclass;
UPDATE invariants.rule_definitions
   SET child = pg_catalog.to_regclass(spec ->> 'child')
 WHERE kind = 'require_count';
CREATE OR REPLACE VIEW invariants.rules AS
SELECT r.tbl,
       r.name,
       r.kind,
       CASE WHEN r.child IS NULL THEN r.spec
            ELSE r.spec || pg_catalog.jsonb_build_object('child', r.child::pg_catalog.text) END AS spec,
       r.spec ->> 'message'        AS message,
       r.kind <> 'write_once'      AS detectable,
       r.spec ? 'repair'           AS repairable,
       r.created_at,
       r.created_by
  FROM invariants.rule_definitions r;

-- The audit log: one row per capture (a statement's rows, or an event),
-- the rows a thousand to a row as binary COPY tuples, a view over both.
CREATE SEQUENCE invariants.audit_capture_id_seq;
CREATE SEQUENCE invariants.audit_entry_id_seq INCREMENT BY 1000;
CREATE TABLE invariants.audit_capture (
    id               bigint      PRIMARY KEY,
    at               timestamptz NOT NULL,
    txid             xid8        NOT NULL,
    op               text        NOT NULL
                     CHECK (op IN ('DELETE', 'TRUNCATE', 'PURGE', 'REPAIR', 'UPDATE', 'SOFT_DELETE', 'DROP', 'PRUNE', 'RESTORE')),
    tbl              regclass,
    schema_name      text        NOT NULL,
    table_name       text        NOT NULL,
    columns          text[],
    types            oid[]       NOT NULL,
    formats          text        NOT NULL,
    parts            text,
    db_user          text        NOT NULL,
    "session_user"   text        NOT NULL,
    application_name text,
    client_addr      inet,
    trigger_depth    integer     NOT NULL,
    statement        text,
    context          jsonb
);
CREATE INDEX audit_capture_txid_idx ON invariants.audit_capture (txid);
CREATE INDEX audit_capture_tbl_idx ON invariants.audit_capture (tbl);
CREATE INDEX audit_capture_at_idx ON invariants.audit_capture USING brin (at);
CREATE TABLE invariants.audit_rows (
    capture  bigint  NOT NULL,
    first_id bigint  NOT NULL,
    entries  integer NOT NULL,
    images   bytea   NOT NULL,
    cascaded integer[]
);
CREATE INDEX audit_rows_capture_idx ON invariants.audit_rows (capture);
DO $$
BEGIN
    ALTER TABLE invariants.audit_rows ALTER COLUMN images SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
CREATE TABLE invariants.audit_restored (
    capture     bigint PRIMARY KEY,
    txid        xid8   NOT NULL
);
COMMENT ON TABLE invariants.audit_capture IS
    'Append-only: who removed or changed rows, when, how (read it through invariants.audit_log).';
COMMENT ON TABLE invariants.audit_rows IS
    'Append-only: the rows of each capture, a thousand to a row (read them through invariants.audit_log).';

-- 0.1.0's entries move over, each a capture of its own with the same id:
-- its row_data, as it was (to_jsonb of the row, or what an event
-- recorded), is the entry's one jsonb field (format j: a jsonb object of
-- the row, which restore reads with jsonb_populate_record).
INSERT INTO invariants.audit_capture
       (id, at, txid, op, tbl, schema_name, table_name, columns, types, formats, db_user, "session_user",
        application_name, client_addr, trigger_depth, statement, context)
SELECT id, at, txid, op, tbl, schema_name, table_name, NULL,
       ARRAY['pg_catalog.jsonb'::pg_catalog.regtype::pg_catalog.oid], 'j', db_user, "session_user",
       application_name, client_addr, trigger_depth, statement, NULL
  FROM invariants.audit_log;
INSERT INTO invariants.audit_rows (capture, first_id, entries, images)
SELECT id, id, 1,
       CASE WHEN row_data IS NULL THEN '\x0001ffffffff'::pg_catalog.bytea
            ELSE '\x0001'::pg_catalog.bytea
                 || pg_catalog.int4send(pg_catalog.octet_length(pg_catalog.jsonb_send(row_data)))
                 || pg_catalog.jsonb_send(row_data) END
  FROM invariants.audit_log;
-- What 0.1.0's restores used stays restored.
INSERT INTO invariants.audit_restored (capture, txid)
SELECT DISTINCT ON (e.id) e.id, r.txid
  FROM invariants.audit_log r
 CROSS JOIN LATERAL pg_catalog.jsonb_array_elements_text(r.row_data -> 'entries') AS used(id)
  JOIN invariants.audit_log e ON e.id = used.id::pg_catalog.int8
 WHERE r.op = 'RESTORE'
 ORDER BY e.id, r.id;
SELECT pg_catalog.setval('invariants.audit_capture_id_seq',
                         coalesce((SELECT max(id) FROM invariants.audit_log), 0) + 1, false);
SELECT pg_catalog.setval('invariants.audit_entry_id_seq',
                         coalesce((SELECT max(id) FROM invariants.audit_log), 0) + 1, false);

ALTER TABLE invariants.audit_log RENAME TO audit_log_0_1_0;

CREATE FUNCTION invariants.audit_entries(columns text[], types oid[], formats text, parts text, images bytea)
    RETURNS SETOF jsonb LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'audit_entries';
COMMENT ON FUNCTION invariants.audit_entries(text[], oid[], text, text, bytea) IS
    'The row_data of each entry of one batch of the audit log, in order.';
CREATE VIEW invariants.audit_log AS
SELECT r.first_id + e.n - 1                         AS id,
       c.at,
       c.txid,
       c.op,
       c.tbl,
       c.schema_name,
       c.table_name,
       e.row_data,
       c.db_user,
       c."session_user",
       c.application_name,
       c.client_addr,
       c.trigger_depth + CASE WHEN (e.n - 1)::integer = ANY (r.cascaded) THEN 1 ELSE 0 END AS trigger_depth,
       c.statement,
       c.context,
       c.id                                         AS capture
  FROM invariants.audit_capture c
  JOIN invariants.audit_rows r ON r.capture = c.id
  CROSS JOIN LATERAL invariants.audit_entries(c.columns, c.types, c.formats, c.parts, r.images)
       WITH ORDINALITY AS e(row_data, n);
COMMENT ON VIEW invariants.audit_log IS
    'Append-only: one row per deleted, truncated, purged, repaired or updated row, or event. Only invariants.prune_audit removes entries.';
REVOKE ALL ON invariants.audit_log FROM PUBLIC;
-- Whoever was granted the log keeps it, on the view.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee, a.privilege_type
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid = 'invariants.audit_log_0_1_0'::pg_catalog.regclass AND a.grantee <> c.relowner LOOP
        EXECUTE pg_catalog.format('GRANT %s ON invariants.audit_log TO %s', g.privilege_type,
                                  CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END);
    END LOOP;
END $$;
DROP TABLE invariants.audit_log_0_1_0;
-- A dropped table stays in the extension's list of tables pg_dump copies
-- (Postgres removes it only on ALTER EXTENSION ... DROP, which cannot run
-- here): the list keeps only what exists.
UPDATE pg_catalog.pg_extension e
   SET extconfig = k.config, extcondition = k.condition
  FROM (SELECT pg_catalog.array_agg(u.c ORDER BY u.i) AS config, pg_catalog.array_agg(u.w ORDER BY u.i) AS condition
          FROM pg_catalog.pg_extension x,
               unnest(x.extconfig, x.extcondition) WITH ORDINALITY AS u(c, w, i)
         WHERE x.extname = 'pg_invariants'
           AND EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = u.c)) k
 WHERE e.extname = 'pg_invariants';
CREATE FUNCTION invariants.audit_log_insert() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_insert';
CREATE FUNCTION invariants.audit_log_refuse() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_log_refuse';
CREATE TRIGGER audit_log_insert INSTEAD OF INSERT ON invariants.audit_log
    FOR EACH ROW EXECUTE FUNCTION invariants.audit_log_insert();
CREATE TRIGGER audit_log_refuse INSTEAD OF UPDATE OR DELETE ON invariants.audit_log
    FOR EACH ROW EXECUTE FUNCTION invariants.audit_log_refuse();
CREATE TRIGGER audit_capture_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_capture
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
CREATE TRIGGER audit_rows_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
CREATE TRIGGER audit_restored_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON invariants.audit_restored
    FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_log_append_only();
ALTER TABLE invariants.audit_capture ENABLE ALWAYS TRIGGER audit_capture_append_only;
ALTER TABLE invariants.audit_rows ENABLE ALWAYS TRIGGER audit_rows_append_only;
ALTER TABLE invariants.audit_restored ENABLE ALWAYS TRIGGER audit_restored_append_only;
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_capture', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_rows', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_restored', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_capture_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_entry_id_seq', '');
REVOKE ALL ON invariants.audit_capture FROM PUBLIC;
REVOKE ALL ON invariants.audit_rows FROM PUBLIC;
REVOKE ALL ON invariants.audit_restored FROM PUBLIC;

-- restore() reports a row per table, with the table's name, what could
-- not be restored, and the keys of updated rows it left as they are.
DROP FUNCTION invariants.restore(xid8, regclass, timestamp with time zone);
CREATE FUNCTION invariants."restore"(
	"txid" xid8 DEFAULT NULL,
	"tbl" regclass DEFAULT NULL,
	"since" timestamp with time zone DEFAULT NULL
) RETURNS TABLE (
	"tbl" regclass,
	"restored" bigint,
	"skipped" bigint,
	"table_name" TEXT,
	"problem" TEXT,
	"conflicts" jsonb
)
LANGUAGE c
AS 'MODULE_PATHNAME', 'restore_wrapper';

-- The audit of UPDATEs and columns kept out of the log (enable_audit), and
-- an UPDATE budget (protect): the settings tables' new columns are added
-- first of all, above.
DROP FUNCTION invariants.enable_audit(regclass, bigint);
CREATE FUNCTION invariants."enable_audit"(
	"tbl" regclass,
	"truncate_capture_limit" bigint DEFAULT 1000000,
	"updates" bool DEFAULT false,
	"exclude" TEXT[] DEFAULT '{}'
) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'enable_audit_wrapper';
DROP FUNCTION invariants.protect(regclass, bigint);
CREATE FUNCTION invariants."protect"(
	"tbl" regclass,
	"max_delete_rows" bigint DEFAULT 1000,
	"max_update_rows" bigint DEFAULT NULL
) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'protect_wrapper';
CREATE FUNCTION invariants.audit_update() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'audit_update';
CREATE FUNCTION invariants.update_budget() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'update_budget';
CREATE FUNCTION invariants.capture_entries(capture bigint) RETURNS SETOF record
    LANGUAGE c ROWS 1000000000 AS 'MODULE_PATHNAME', 'capture_entries';
COMMENT ON FUNCTION invariants.capture_entries(bigint) IS
    'The entries of the UPDATE capture invariants.restore is reverting; usable only by it.';

-- New trigger functions: the TRUNCATE guard of audited, protected and
-- soft-delete tables (instead of audit_truncate), row movement between
-- partitions and deleted rows kept deleted (soft delete), count checks now.
CREATE FUNCTION invariants.before_truncate() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'before_truncate';
CREATE FUNCTION invariants.soft_delete_update() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_update';
CREATE FUNCTION invariants.soft_delete_keep() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'soft_delete_keep';
CREATE FUNCTION invariants.check_counts() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'check_counts';
COMMENT ON FUNCTION invariants.check_counts() IS
    'Checks now the count rules of the parents this transaction touched so far, as COMMIT will.';
CREATE FUNCTION invariants."reinstall_triggers"(
	"tbl" regclass DEFAULT NULL
) RETURNS INT
LANGUAGE c
AS 'MODULE_PATHNAME', 'reinstall_triggers_wrapper';
CREATE FUNCTION invariants."forget_dropped_tables"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'forget_dropped_tables_wrapper';

-- The DDL guards: every command, replica role too, and a start event.
DROP EVENT TRIGGER invariants_guard_drop;
DROP EVENT TRIGGER invariants_guard_alter;
CREATE FUNCTION invariants.guard_ddl_start() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_ddl_start';
CREATE EVENT TRIGGER invariants_guard_drop ON sql_drop EXECUTE FUNCTION invariants.guard_drop();
CREATE EVENT TRIGGER invariants_guard_alter ON ddl_command_end EXECUTE FUNCTION invariants.guard_alter();
CREATE EVENT TRIGGER invariants_guard_ddl_start ON ddl_command_start EXECUTE FUNCTION invariants.guard_ddl_start();
ALTER EVENT TRIGGER invariants_guard_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER invariants_guard_alter ENABLE ALWAYS;
ALTER EVENT TRIGGER invariants_guard_ddl_start ENABLE ALWAYS;

-- Every table's triggers become what its declarations need now (count
-- rules' row triggers instead of constraint triggers, the TRUNCATE guard,
-- the soft-delete triggers, ...); then 0.1.0's TRUNCATE trigger function
-- is unused.
SELECT invariants.reinstall_triggers();
DROP FUNCTION invariants.audit_truncate();
