-- pg_invariants 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_invariants UPDATE TO '0.2.0').
-- Every change to the extension's SQL objects since 0.1.0 is here, in the
-- order it was made; a fresh 0.2.0 install and an updated 0.1.0 one have the
-- same catalog (checked by the upgrade test).
\echo Use "ALTER EXTENSION pg_invariants UPDATE" to load this file. \quit

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
