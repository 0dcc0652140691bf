-- pg_invariants 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_invariants UPDATE TO '0.2.0').
-- Every change to the extension's SQL objects since 0.1.0 is here, in the
-- order it was made; a fresh 0.2.0 install and an updated 0.1.0 one have the
-- same catalog (checked by the upgrade test).
\echo Use "ALTER EXTENSION pg_invariants UPDATE" to load this file. \quit

-- Rule values are checked and compared in the column's own type, as the
-- table's owner: the PL/pgSQL cast helper is gone.
DROP FUNCTION invariants.is_valid_input(text, oid);
