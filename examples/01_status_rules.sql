-- Incident 1: "status without evidence".
-- An endpoint marked 53 of 73 campaign prospects 'connection_request_sent'
-- while contacted_at stayed NULL. Their fix was a PL/pgSQL trigger, a
-- detection view, a cleanup function and an hourly external cron. Here the
-- same three rules are declared once, and prevention, detection and repair
-- all follow from that declaration.

CREATE EXTENSION IF NOT EXISTS pg_invariants;

CREATE TABLE campaign_prospects (
    id           serial PRIMARY KEY,
    campaign_id  int NOT NULL,
    status       text NOT NULL DEFAULT 'pending',
    contacted_at timestamptz,
    updated_at   timestamptz
);

-- The legacy data: 53 corrupt rows among 73, written before any rule existed.
INSERT INTO campaign_prospects (campaign_id, status, contacted_at)
SELECT 1 + i % 3, 'connection_request_sent', NULL FROM generate_series(1, 53) i
UNION ALL SELECT 1, 'connected', timestamptz '2026-03-02 09:30+00' FROM generate_series(1, 12)
UNION ALL SELECT 2, 'pending', NULL FROM generate_series(1, 8);

-- Their three rules, verbatim, as three declarations.
-- 1. status 'connection_request_sent' requires contacted_at IS NOT NULL
--    (and says how to repair rows that break it: back to 'pending').
SELECT invariants.require_not_null('campaign_prospects', 'contacted_at', 'status',
         ARRAY['connection_request_sent'],
         repair => '{"set": {"status": "pending"}, "touch": ["updated_at"], "group_by": "campaign_id"}');
-- 2. when contacted_at goes from NULL to a value, status must be one of these.
SELECT invariants.require_on_set('campaign_prospects', 'status', 'contacted_at',
         ARRAY['connection_request_sent', 'connected', 'messaging', 'replied', 'failed']);
-- 3. contacted_at can never be cleared once set.
SELECT invariants.write_once('campaign_prospects', 'contacted_at');

SELECT tbl, name, kind, detectable, repairable FROM invariants.rules;

-- Their Test 1: mark a prospect as sent without contacting it. Refused.
\set ON_ERROR_STOP off
UPDATE campaign_prospects SET status = 'connection_request_sent' WHERE id = 70;
\errverbose
-- The other two rules refuse too.
UPDATE campaign_prospects SET contacted_at = '2026-03-04 11:00+00' WHERE id = 70;
UPDATE campaign_prospects SET contacted_at = NULL WHERE id = 60;
\set ON_ERROR_STOP on

-- The right way passes.
UPDATE campaign_prospects SET status = 'connection_request_sent', contacted_at = '2026-03-04 11:00+00' WHERE id = 70;
-- 'failed' with a timestamp is allowed, and detection agrees with that.
UPDATE campaign_prospects SET status = 'failed' WHERE id = 70;

-- Detection: the same rules find the legacy corrupt rows.
SELECT * FROM invariants.violations('campaign_prospects');
SELECT * FROM invariants.violating_rows('campaign_prospects', 'contacted_at_required_when_status', 5);

-- What the incident's /api/admin/data-integrity endpoint returned, as one call.
SELECT jsonb_pretty(invariants.health());

-- Repair: first see what would change, then fix it. Each row's previous image
-- goes to the audit log, so the repair itself can be undone.
SELECT * FROM invariants.repair(dry_run => true);
SELECT * FROM invariants.repair();
SELECT op, count(*) FROM invariants.audit_log GROUP BY op;

SELECT jsonb_pretty(invariants.health());

-- Self-healing without a web endpoint, a shared secret or an external cron,
-- where pg_cron is installed.
SELECT count(*) = 1 AS have_pg_cron FROM pg_available_extensions WHERE name = 'pg_cron' \gset
\if :have_pg_cron
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT invariants.schedule_repair('*/5 * * * *') > 0 AS scheduled;
SELECT jobname, schedule, command FROM cron.job;
\else
\echo 'pg_cron is not installed on this server: the scheduled repair is skipped'
\endif

-- The outcome, checked.
DO $$
BEGIN
    IF (SELECT count(*) FROM campaign_prospects WHERE status = 'connection_request_sent' AND contacted_at IS NULL) <> 0 THEN
        RAISE EXCEPTION 'corrupt rows remain';
    END IF;
    IF (invariants.health() ->> 'status') <> 'healthy' THEN
        RAISE EXCEPTION 'health is not healthy';
    END IF;
    IF (SELECT count(*) FROM invariants.audit_log WHERE op = 'REPAIR') <> 53 THEN
        RAISE EXCEPTION 'expected 53 REPAIR entries';
    END IF;
END $$;
