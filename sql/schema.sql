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

-- The audit log: what left user tables, so that it can be restored. Users
-- read it through the view invariants.audit_log, one row per entry; behind
-- it, one row per capture (a statement's rows, or an event) says who did
-- what and when, and the rows themselves are stored a thousand to a row,
-- as Postgres' binary COPY writes tuples, compressed.
CREATE SEQUENCE invariants.audit_capture_id_seq;
-- Each batch of up to 1000 entries takes one number and the 999 after it.
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
    -- The names of the fields of each row image, in order; NULL when each
    -- entry is one jsonb value (events, entries written by hand).
    columns          text[],
    -- Their types, and how each is written: b (the type's binary send
    -- function) or t (its text form: the type has no binary one).
    types            oid[]       NOT NULL,
    formats          text        NOT NULL,
    -- UPDATE entries: each field's part, k (the row's key, as it is after
    -- the UPDATE), o (a changed column's old value) or n (its new value).
    -- NULL for the rest, whose images are whole rows.
    parts            text,
    db_user          text        NOT NULL,
    "session_user"   text        NOT NULL,
    application_name text,
    client_addr      inet,
    trigger_depth    integer     NOT NULL,
    statement        text,
    -- The session settings named by invariants.audit_context.
    context          jsonb
);
CREATE INDEX audit_capture_txid_idx ON invariants.audit_capture (txid);
CREATE INDEX audit_capture_tbl_idx ON invariants.audit_capture (tbl);
CREATE INDEX audit_capture_at_idx ON invariants.audit_capture USING brin (at);
CREATE TABLE invariants.audit_rows (
    capture  bigint  NOT NULL,
    -- The id of the batch's first entry; the n-th is first_id + n - 1.
    first_id bigint  NOT NULL,
    -- How many entries the batch holds.
    entries  integer NOT NULL,
    -- The entries, one binary COPY tuple each (a field count, then each
    -- field's length and bytes), one after the other.
    images   bytea   NOT NULL,
    -- Positions (from 0) of entries a cascade removed: one level deeper.
    cascaded integer[]
);
CREATE INDEX audit_rows_capture_idx ON invariants.audit_rows (capture);
DO $$
BEGIN
    -- Much faster than the default where the server has it.
    ALTER TABLE invariants.audit_rows ALTER COLUMN images SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
-- Captures a restore has used, each once: what keeps two concurrent
-- restores from putting the same rows back twice.
CREATE TABLE invariants.audit_restored (
    capture     bigint PRIMARY KEY,
    -- The transaction of the restore that used it.
    txid        xid8   NOT NULL
);
COMMENT ON TABLE invariants.audit_capture IS
    'Append-only: who removed or changed rows, when, how (read it through invariants.audit_log).';
COMMENT ON TABLE invariants.audit_rows IS
    'Append-only: the rows of each capture, a thousand to a row (read them through invariants.audit_log).';

-- Tables whose DELETE and TRUNCATE (and UPDATE, when asked) are captured
-- (invariants.enable_audit).
CREATE TABLE invariants.audited_tables (
    tbl                    regclass    PRIMARY KEY,
    truncate_capture_limit bigint      NOT NULL CHECK (truncate_capture_limit >= 0),
    enabled_at             timestamptz NOT NULL DEFAULT now(),
    enabled_by             text        NOT NULL DEFAULT current_user,
    updates                boolean     NOT NULL DEFAULT false,
    -- Columns never written to the log.
    exclude                text[]      NOT NULL DEFAULT '{}'
);

-- Tables guarded against TRUNCATE, mass DELETE and UPDATE, and DROP
-- (invariants.protect).
CREATE TABLE invariants.protected_tables (
    tbl             regclass    PRIMARY KEY,
    max_delete_rows bigint      NOT NULL CHECK (max_delete_rows >= 0),
    protected_at    timestamptz NOT NULL DEFAULT now(),
    protected_by    text        NOT NULL DEFAULT current_user,
    -- NULL: UPDATEs are not counted.
    max_update_rows bigint      CHECK (max_update_rows >= 0)
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
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_capture', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_rows', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_restored', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audited_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.protected_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.soft_delete_tables', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_capture_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('invariants.audit_entry_id_seq', '');

-- Not writable by PUBLIC: the extension's functions write them on a table
-- owner's behalf. Rules are readable by everyone (they describe the schema);
-- the audit log holds row data, so only its owner and roles granted SELECT
-- read it.
REVOKE ALL ON invariants.rule_definitions FROM PUBLIC;
GRANT SELECT ON invariants.rule_definitions TO PUBLIC;
REVOKE ALL ON invariants.audit_capture FROM PUBLIC;
REVOKE ALL ON invariants.audit_rows FROM PUBLIC;
REVOKE ALL ON invariants.audit_restored FROM PUBLIC;
REVOKE ALL ON invariants.audited_tables FROM PUBLIC;
GRANT SELECT ON invariants.audited_tables TO PUBLIC;
REVOKE ALL ON invariants.protected_tables FROM PUBLIC;
GRANT SELECT ON invariants.protected_tables TO PUBLIC;
REVOKE ALL ON invariants.soft_delete_tables FROM PUBLIC;
GRANT SELECT ON invariants.soft_delete_tables TO PUBLIC;
