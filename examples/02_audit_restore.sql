-- Incidents 3 and 4: a cleanup script emptied tables with TRUNCATE and
-- DELETE, and a cascade wiped a customer's talents and deals. Nothing
-- recorded what was lost. With the tables audited, one call restores it all.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE TABLE users  (id int PRIMARY KEY, email text NOT NULL);
CREATE TABLE talent (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     user_id int NOT NULL REFERENCES users ON DELETE CASCADE, name text);
CREATE TABLE deal   (id int PRIMARY KEY, talent_id int NOT NULL REFERENCES talent ON DELETE CASCADE,
                     amount numeric(12,2), commission numeric(12,2) GENERATED ALWAYS AS (amount * 0.15) STORED);
CREATE TABLE import_log (id bigint PRIMARY KEY, line text);

INSERT INTO users VALUES (1, 'ana@example.com'), (2, 'bo@example.com');
INSERT INTO talent (user_id, name) SELECT 1 + i % 2, 'talent ' || i FROM generate_series(1, 44) i;
INSERT INTO deal SELECT i, 1 + i % 44, i * 100 FROM generate_series(1, 110) i;
INSERT INTO import_log SELECT i, 'line ' || i FROM generate_series(1, 500) i;

SELECT invariants.enable_audit(t) FROM unnest(ARRAY['users', 'talent', 'deal', 'import_log']::regclass[]) t;

-- The cleanup script: one cascade and one TRUNCATE, in one transaction.
BEGIN;
DELETE FROM users WHERE id = 1;           -- cascades through talent and deal
TRUNCATE import_log;                      -- no DELETE trigger, no statistics
SELECT pg_current_xact_id() AS cleanup_txid \gset
COMMIT;

SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM talent) AS talent,
       (SELECT count(*) FROM deal) AS deal, (SELECT count(*) FROM import_log) AS import_log;

-- What was lost, and how: trigger_depth 2 marks rows removed by the cascade.
SELECT op, table_name, trigger_depth, count(*)
  FROM invariants.audit_log WHERE txid = :'cleanup_txid'
 GROUP BY 1, 2, 3 ORDER BY 2;

-- One call puts back everything that transaction removed, parents first.
SELECT * FROM invariants.restore(:'cleanup_txid');

SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM talent) AS talent,
       (SELECT count(*) FROM deal) AS deal, (SELECT count(*) FROM import_log) AS import_log;

-- Restoring twice restores nothing.
SELECT * FROM invariants.restore(:'cleanup_txid');

-- A table too large to copy refuses TRUNCATE and says how to proceed.
SELECT invariants.enable_audit('import_log', truncate_capture_limit => 100);
\set ON_ERROR_STOP off
TRUNCATE import_log;
\set ON_ERROR_STOP on

-- The log itself cannot be rewritten, not even by a superuser.
\set ON_ERROR_STOP off
DELETE FROM invariants.audit_log;
\set ON_ERROR_STOP on

DO $$
BEGIN
    IF (SELECT count(*) FROM users) <> 2 OR (SELECT count(*) FROM talent) <> 44
       OR (SELECT count(*) FROM deal) <> 110 OR (SELECT count(*) FROM import_log) <> 500 THEN
        RAISE EXCEPTION 'not everything was restored';
    END IF;
END $$;
