-- Incident 2: "silent loss on import". A batch insert of 100 prospects saved
-- 0 while the session row said total_prospects = 100; 168 prospects were lost
-- over three weeks because nothing compared the claim with the rows.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE TABLE import_sessions (id int PRIMARY KEY, source text, total_prospects int NOT NULL DEFAULT 0);
CREATE TABLE imported_prospects (id serial PRIMARY KEY,
                                 session_id int NOT NULL REFERENCES import_sessions ON DELETE CASCADE,
                                 email text);
CREATE INDEX ON imported_prospects (session_id);

-- Three weeks of history, before the rule existed: two sessions lost rows.
INSERT INTO import_sessions VALUES (1, 'linkedin.csv', 100), (2, 'webinar.csv', 68), (3, 'manual', 2);
INSERT INTO imported_prospects (session_id, email) VALUES (3, 'a@example.com'), (3, 'b@example.com');

-- One declaration: a session's total_prospects is the number of its prospects.
SELECT invariants.require_count('import_sessions', 'total_prospects', 'imported_prospects', 'session_id');

-- The appendix query of the incident report is now one call.
SELECT * FROM invariants.violations('import_sessions');
SELECT * FROM invariants.violating_rows('import_sessions', 'total_prospects_counts_imported_prospects');

-- The incident again: the session row claims 100, the batch insert saves 0.
-- The mismatch is refused at COMMIT, with the key, the claim and the count.
\set ON_ERROR_STOP off
BEGIN;
INSERT INTO import_sessions VALUES (4, 'partners.csv', 100);
INSERT INTO imported_prospects (session_id, email)
SELECT 4, 'p' || i || '@example.com' FROM generate_series(1, 100) i WHERE false;   -- the bug: nothing saved
COMMIT;
\set ON_ERROR_STOP on

-- A correct import of 100 000 rows is checked once, at COMMIT.
BEGIN;
INSERT INTO import_sessions VALUES (5, 'big.csv', 100000);
INSERT INTO imported_prospects (session_id, email) SELECT 5, 'p' || i || '@example.com' FROM generate_series(1, 100000) i;
COMMIT;

SELECT id, source, total_prospects, (SELECT count(*) FROM imported_prospects p WHERE p.session_id = s.id) AS actual
  FROM import_sessions s ORDER BY id;

DO $$
BEGIN
    IF EXISTS (SELECT FROM import_sessions WHERE id = 4) THEN
        RAISE EXCEPTION 'the claim without rows was committed';
    END IF;
    IF (SELECT count(*) FROM imported_prospects WHERE session_id = 5) <> 100000 THEN
        RAISE EXCEPTION 'the correct import did not commit';
    END IF;
END $$;
