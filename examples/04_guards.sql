-- Incidents 3 and 4 replayed against protected tables: a cleanup script
-- that TRUNCATEs and mass-DELETEs, and a migration that runs
-- DROP TYPE ... CASCADE. Each stops at the database and says what was
-- about to happen.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE TYPE deal_stage AS ENUM ('lead', 'won', 'lost');
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE contracts (id int PRIMARY KEY,
                        customer_id int REFERENCES customers ON DELETE CASCADE,
                        stage deal_stage, amount numeric);
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 20) i;
INSERT INTO contracts SELECT i, 1 + i % 20, 'won', i * 100 FROM generate_series(1, 2000) i;

-- One call: audit plus every guard. At most 500 rows a transaction.
SELECT invariants.protect('contracts', max_delete_rows => 500);

-- lint() finds the cascade that wiped the incident's deals, with its fix.
SELECT severity, object, problem, fix FROM invariants.lint();

\set ON_ERROR_STOP off
-- The cleanup script.
TRUNCATE contracts;
TRUNCATE customers CASCADE;
DELETE FROM contracts WHERE amount > 1000;
DELETE FROM customers WHERE id <= 10;       -- cascades into 1000 contracts
-- The migration.
DROP TYPE deal_stage CASCADE;
ALTER TABLE contracts DROP COLUMN amount;
ALTER TABLE contracts DISABLE TRIGGER ALL;
DROP TABLE contracts;
\set ON_ERROR_STOP on

SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM contracts) AS contracts;

-- Deliberate changes by the table's owner are one SET LOCAL away, and recorded.
BEGIN;
SET LOCAL invariants.max_delete_rows = 0;
DELETE FROM contracts WHERE amount > 150000;
COMMIT;
BEGIN;
SET LOCAL invariants.allow_drop = on;
ALTER TABLE contracts DROP COLUMN amount;
COMMIT;
SELECT op, table_name, row_data ->> 'object' AS object, statement FROM invariants.audit_log WHERE op = 'DROP';

DO $$
BEGIN
    IF (SELECT count(*) FROM contracts) <> 1500 OR (SELECT count(*) FROM customers) <> 20 THEN
        RAISE EXCEPTION 'a guard let rows go';
    END IF;
END $$;
