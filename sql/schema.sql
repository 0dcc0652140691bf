-- pg_invariants: the extension's own tables.
-- Created here, not by the control file, so that DROP EXTENSION removes it.
CREATE SCHEMA invariants;

GRANT USAGE ON SCHEMA invariants TO PUBLIC;

-- Every rule declared with invariants.add_rule or one of its shorthands.
CREATE TABLE invariants.rule_definitions (
    tbl        regclass    NOT NULL,
    name       text        NOT NULL CHECK (name <> ''),
    kind       text        NOT NULL,
    spec       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL DEFAULT current_user,
    -- A count rule's child table (so a rename changes nothing).
    child      regclass,
    PRIMARY KEY (tbl, name)
);
COMMENT ON TABLE invariants.rule_definitions IS
    'Rules declared with invariants.add_rule and its shorthands; read it through the view invariants.rules.';

-- Append-only record of removed and changed rows, so they can be restored.
CREATE TABLE invariants.audit_log (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    txid             xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    op               text        NOT NULL
                     CHECK (op IN ('DELETE', 'TRUNCATE', 'PURGE', 'REPAIR', 'SOFT_DELETE', 'DROP', 'PRUNE', 'RESTORE')),
    tbl              regclass,
    schema_name      text        NOT NULL,
    table_name       text        NOT NULL,
    row_data         jsonb,
    db_user          text        NOT NULL DEFAULT current_user,
    "session_user"   text        NOT NULL DEFAULT session_user,
    application_name text        DEFAULT pg_catalog.current_setting('application_name', true),
    client_addr      inet        DEFAULT pg_catalog.inet_client_addr(),
    trigger_depth    integer     NOT NULL DEFAULT pg_catalog.pg_trigger_depth(),
    statement        text
);
-- restore(txid) looks entries up by transaction. The log is append-only and
-- written in time order, so a BRIN index finds a time range (restore's
-- since, prune_audit) for almost no upkeep; a B-tree on (tbl, at) added
-- about a fifth to the cost of capturing a large DELETE.
CREATE INDEX audit_log_txid_idx ON invariants.audit_log (txid);
CREATE INDEX audit_log_at_idx ON invariants.audit_log USING brin (at);
COMMENT ON TABLE invariants.audit_log IS
    'Append-only: one row per deleted, truncated, purged, repaired or dropped row. Only invariants.prune_audit removes entries.';

-- Tables whose DELETE and TRUNCATE are captured (invariants.enable_audit).
CREATE TABLE invariants.audited_tables (
    tbl                    regclass    PRIMARY KEY,
    truncate_capture_limit bigint      NOT NULL CHECK (truncate_capture_limit >= 0),
    enabled_at             timestamptz NOT NULL DEFAULT now(),
    enabled_by             text        NOT NULL DEFAULT current_user
);

-- Tables guarded against TRUNCATE, mass DELETE and DROP (invariants.protect).
CREATE TABLE invariants.protected_tables (
    tbl             regclass    PRIMARY KEY,
    max_delete_rows bigint      NOT NULL CHECK (max_delete_rows >= 0),
    protected_at    timestamptz NOT NULL DEFAULT now(),
    protected_by    text        NOT NULL DEFAULT current_user
);

-- Tables whose DELETE becomes "SET <column> = now()" (invariants.enable_soft_delete).
CREATE TABLE invariants.soft_delete_tables (
    tbl         regclass    PRIMARY KEY,
    column_name text        NOT NULL,
    "cascade"   boolean     NOT NULL,
    -- soft-deleted rows hidden from roles other than the owner, by a
    -- row-level security policy; rls_added: RLS was switched on for it
    hide        boolean     NOT NULL DEFAULT false,
    rls_added   boolean     NOT NULL DEFAULT false,
    enabled_at  timestamptz NOT NULL DEFAULT now(),
    enabled_by  text        NOT NULL DEFAULT current_user
);

-- pg_dump keeps the user's declarations and history.
SELECT pg_catalog.pg_extension_config_dump('invariants.rule_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audited_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.protected_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.soft_delete_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_log_id_seq', '');

-- Not writable by PUBLIC: the extension's functions write them on a table
-- owner's behalf. Rules are readable by everyone (they describe the schema);
-- the audit log holds row data, so only its owner and roles granted SELECT
-- read it.
REVOKE ALL ON invariants.rule_definitions FROM PUBLIC;
GRANT SELECT ON invariants.rule_definitions TO PUBLIC;
REVOKE ALL ON invariants.audit_log FROM PUBLIC;
REVOKE ALL ON invariants.audited_tables FROM PUBLIC;
GRANT SELECT ON invariants.audited_tables TO PUBLIC;
REVOKE ALL ON invariants.protected_tables FROM PUBLIC;
GRANT SELECT ON invariants.protected_tables TO PUBLIC;
REVOKE ALL ON invariants.soft_delete_tables FROM PUBLIC;
GRANT SELECT ON invariants.soft_delete_tables TO PUBLIC;
