-- Incident 1 again, undone: an endpoint marks 53 of 73 prospects as sent
-- in one bad UPDATE. With the table's UPDATEs audited, one call puts back
-- exactly those 53 statuses, and a row someone changed since is reported,
-- not overwritten. The log records who did it, as the application knows
-- them, and never stores the columns kept out of it.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE TABLE outreach (
    id            int PRIMARY KEY,
    status        text NOT NULL DEFAULT 'pending',
    contacted_at  timestamptz,
    linkedin_auth text            -- a session token: never to be logged
);
INSERT INTO outreach (id, linkedin_auth) SELECT i, 'token-' || md5(i::text) FROM generate_series(1, 73) i;

SELECT invariants.enable_audit('outreach', updates => true, exclude => '{linkedin_auth}');
-- Who made a change, taken from the application's session (a superuser
-- setting: applications set the value, not what is recorded).
SET invariants.audit_context = 'app.user_id';

-- The endpoint, acting for one user.
BEGIN;
SELECT set_config('app.user_id', 'ops-dashboard', true);
UPDATE outreach SET status = 'connection_request_sent', linkedin_auth = 'refreshed' WHERE id <= 53;
SELECT pg_current_xact_id() AS bad_txid \gset
COMMIT;

-- Meanwhile a real reply arrives for prospect 7.
UPDATE outreach SET status = 'replied', contacted_at = now() WHERE id = 7;

-- What the log holds for one row: its key and the changed column, old
-- and new; the token is not there.
SELECT op, row_data, context FROM invariants.audit_log WHERE txid = :'bad_txid' ORDER BY id LIMIT 1;
SELECT count(*) AS entries_with_the_token FROM invariants.audit_log WHERE row_data::text LIKE '%token%';

-- Undo that transaction: 52 statuses back, prospect 7 reported as a
-- conflict and left as the reply made it. (The token's change stays: an
-- excluded column is never logged, so it cannot be put back.)
SELECT restored, skipped, conflicts FROM invariants.restore(:'bad_txid');
SELECT status, count(*) FROM outreach GROUP BY status ORDER BY status;

-- Undoing twice changes nothing.
SELECT * FROM invariants.restore(:'bad_txid');

-- A guard for next time: at most 20 rows updated per transaction.
SELECT invariants.protect('outreach', max_update_rows => 20);
\set ON_ERROR_STOP off
UPDATE outreach SET status = 'connection_request_sent';
\set ON_ERROR_STOP on

DO $$
BEGIN
    IF (SELECT count(*) FROM outreach WHERE status = 'pending') <> 72
       OR (SELECT status FROM outreach WHERE id = 7) <> 'replied' THEN
        RAISE EXCEPTION 'the UPDATE was not undone as expected';
    END IF;
    IF EXISTS (SELECT FROM invariants.audit_log WHERE row_data::text LIKE '%token%') THEN
        RAISE EXCEPTION 'an excluded column reached the log';
    END IF;
END $$;
RESET invariants.audit_context;
