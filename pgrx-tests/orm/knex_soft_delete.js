// Knex against soft-delete tables, on the cluster that preloads
// pg_invariants and on the one that does not (PGI_HOST, PGI_PRELOAD_PORT,
// PGI_PORT): del() returns one row deleted when preloaded (0 without), and
// a stale versioned save (a row deleted by another session, then updated
// by key and version with every column) updates 0 rows in both modes, the
// row staying deleted.
const { Client } = require('pg');
const knexFactory = require('knex');

const host = process.env.PGI_HOST || '127.0.0.1';
const modes = [
  ['preload', Number(process.env.PGI_PRELOAD_PORT || 28919)],
  ['trigger', Number(process.env.PGI_PORT || 28916)],
];
const db = 'pgi_orm_knex';

async function run(mode, port, failures) {
  const admin = new Client({ host, port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();

  const knex = knexFactory({ client: 'pg', connection: { host, port, user: 'postgres', database: db } });
  await knex.raw(`CREATE EXTENSION pg_invariants;
    CREATE TABLE users (id int PRIMARY KEY, email text, version int NOT NULL DEFAULT 1, deleted_at timestamptz);
    INSERT INTO users (id, email) VALUES (1, 'ana@example.com'), (2, 'bo@example.com');
    SELECT invariants.enable_soft_delete('users');`);

  const expected = mode === 'preload' ? 1 : 0;
  const deleted = await knex('users').where({ id: 1 }).del();
  if (deleted !== expected) failures.push(`${mode}: del() returned ${deleted}, expected ${expected}`);

  const user = await knex('users').where({ id: 2 }).first();
  await knex('users').where({ id: 2 }).del();
  const saved = await knex('users')
    .where({ id: 2, version: user.version })
    .update({ email: 'edited@example.com', deleted_at: null, version: user.version + 1 });
  if (saved !== 0) failures.push(`${mode}: the stale save updated ${saved} rows, expected 0`);
  const rows = await knex('users').whereNotNull('deleted_at').orderBy('id').select('id');
  if (rows.length !== 2) failures.push(`${mode}: ${rows.length} rows soft-deleted, expected 2`);
  await knex.destroy();
}

async function main() {
  const failures = [];
  for (const [mode, port] of modes) await run(mode, port, failures);
  for (const failure of failures) console.log(`knex: FAILED: ${failure}`);
  console.log(`knex: ${6 - failures.length} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((error) => {
  console.log(`knex: FAILED: ${error.message}`);
  console.log('knex: 0 passed, 1 failed');
  process.exit(1);
});
