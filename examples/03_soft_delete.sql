-- Incident 4: deleting one user cascaded through talent and deal and wiped
-- 20+ talents, 50+ deals and their commissions. With soft delete the same
-- DELETE loses nothing, and undelete brings it all back.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE SCHEMA agency;
CREATE TABLE agency.users  (id int PRIMARY KEY, email text, deleted_at timestamptz);
CREATE TABLE agency.talent (id int PRIMARY KEY, user_id int REFERENCES agency.users ON DELETE CASCADE,
                            name text, deleted_at timestamptz);
CREATE TABLE agency.deal   (id int PRIMARY KEY, talent_id int REFERENCES agency.talent ON DELETE CASCADE,
                            amount numeric(12,2), commission numeric(12,2), deleted_at timestamptz);
INSERT INTO agency.users VALUES (1, 'ana@example.com'), (2, 'bo@example.com');
INSERT INTO agency.talent SELECT i, 1 + i % 2, 'talent ' || i, NULL FROM generate_series(1, 44) i;
INSERT INTO agency.deal SELECT i, 1 + i % 44, i * 100, i * 15, NULL FROM generate_series(1, 110) i;

-- One call: users, and every table its ON DELETE CASCADE keys reach.
SELECT invariants.enable_soft_delete('agency.users');
SELECT tbl, column_name, "cascade" FROM invariants.soft_delete_tables;

-- The incident's DELETE. Postgres reports DELETE 0: no row was removed.
DELETE FROM agency.users WHERE id = 1;

SELECT 'users' AS tbl, count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) FILTER (WHERE deleted_at IS NOT NULL) AS soft_deleted FROM agency.users
UNION ALL SELECT 'talent', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM agency.talent
UNION ALL SELECT 'deal', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM agency.deal;

-- One call brings the user, the talents and the deals back.
SELECT invariants.undelete('agency.users', now() - interval '1 hour') AS users_back;
SELECT (SELECT count(*) FROM agency.talent WHERE deleted_at IS NULL) AS talent_live,
       (SELECT count(*) FROM agency.deal WHERE deleted_at IS NULL) AS deal_live;

-- A hard delete elsewhere that would cascade into a soft-delete table is
-- refused, naming both tables: never orphans, never silent loss.
CREATE TABLE agency.agencies (id int PRIMARY KEY);
CREATE TABLE agency.contacts (id int PRIMARY KEY, agency_id int REFERENCES agency.agencies ON DELETE CASCADE,
                              deleted_at timestamptz);
INSERT INTO agency.agencies VALUES (1); INSERT INTO agency.contacts VALUES (1, 1);
SELECT invariants.enable_soft_delete('agency.contacts');
\set ON_ERROR_STOP off
DELETE FROM agency.agencies;
\set ON_ERROR_STOP on

-- A deleted row stays deleted: a stale save (an ORM writing every column)
-- changes nothing, and DELETE of it neither.
UPDATE agency.users SET deleted_at = NULL, email = 'stale@example.com' WHERE id = 2;   -- UPDATE 0
DELETE FROM agency.users WHERE id = 2;    -- already deleted: nothing changes

-- purge is the only way rows really go, children first, each copied to the log.
-- (Here the deletion is backdated by hand, which takes the owner's switch.)
BEGIN;
SET LOCAL invariants.allow_undelete = on;
UPDATE agency.users SET deleted_at = now() - interval '90 days' WHERE id = 2;
UPDATE agency.talent SET deleted_at = now() - interval '90 days' WHERE user_id = 2;
UPDATE agency.deal SET deleted_at = now() - interval '90 days'
 WHERE talent_id IN (SELECT id FROM agency.talent WHERE user_id = 2);
COMMIT;
SELECT invariants.purge('agency.users', older_than => '30 days') AS users_purged;
SELECT table_name, count(*) FROM invariants.audit_log WHERE op = 'PURGE' GROUP BY 1 ORDER BY 1;

DO $$
BEGIN
    IF (SELECT count(*) FROM agency.users) <> 1 OR (SELECT count(*) FROM agency.talent WHERE deleted_at IS NULL) <> 22 THEN
        RAISE EXCEPTION 'unexpected soft delete outcome';
    END IF;
    IF (SELECT count(*) FROM agency.contacts) <> 1 THEN
        RAISE EXCEPTION 'a hard cascade removed a soft-delete row';
    END IF;
END $$;
