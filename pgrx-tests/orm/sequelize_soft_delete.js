// Sequelize against soft-delete tables, on the cluster that preloads
// pg_invariants and on the one that does not (PGI_HOST, PGI_PRELOAD_PORT,
// PGI_PORT):
// - destroy reports one row affected when preloaded (0 without), raises
//   nothing, and the row stays in the table, soft-deleted;
// - a stale save (the row loaded, deleted by another session, then edited
//   and saved) raises OptimisticLockError through the model's version, and
//   the row stays deleted, in both modes.
const { Client } = require('pg');
const { Sequelize, DataTypes, OptimisticLockError } = require('sequelize');

const host = process.env.PGI_HOST || '127.0.0.1';
const modes = [
  ['preload', Number(process.env.PGI_PRELOAD_PORT || 28919)],
  ['trigger', Number(process.env.PGI_PORT || 28916)],
];
const db = 'pgi_orm_sequelize';

async function run(mode, port, failures) {
  const admin = new Client({ host, port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();

  const sequelize = new Sequelize(db, 'postgres', '', { host, port, dialect: 'postgres', logging: false });
  await sequelize.query(`CREATE EXTENSION pg_invariants;
    CREATE TABLE users (id int PRIMARY KEY, email text, version int NOT NULL DEFAULT 0, deleted_at timestamptz);
    INSERT INTO users (id, email) VALUES (1, 'ana@example.com'), (2, 'bo@example.com'), (3, 'cy@example.com');
    SELECT invariants.enable_soft_delete('users');`);
  const User = sequelize.define('User', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    email: DataTypes.TEXT,
    deleted_at: DataTypes.DATE,
  }, { tableName: 'users', timestamps: false, version: true });

  const expected = mode === 'preload' ? 1 : 0;
  const destroyed = await User.destroy({ where: { id: 1 } });
  if (destroyed !== expected) failures.push(`${mode}: Model.destroy reported ${destroyed} rows, expected ${expected}`);

  // The stale save.
  const user = await User.findByPk(2);
  await sequelize.query('DELETE FROM users WHERE id = 2');
  user.email = 'edited@example.com';
  user.deleted_at = null;
  try {
    await user.save();
    failures.push(`${mode}: the stale save succeeded`);
  } catch (error) {
    if (!(error instanceof OptimisticLockError)) failures.push(`${mode}: the stale save raised ${error.name}`);
  }

  const [rows] = await sequelize.query('SELECT id FROM users WHERE deleted_at IS NOT NULL ORDER BY id');
  if (rows.length !== 2) failures.push(`${mode}: ${rows.length} rows soft-deleted, expected 2 (both still in the table)`);
  await sequelize.close();
}

async function main() {
  const failures = [];
  for (const [mode, port] of modes) await run(mode, port, failures);
  for (const failure of failures) console.log(`sequelize: FAILED: ${failure}`);
  console.log(`sequelize: ${6 - failures.length} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((error) => {
  console.log(`sequelize: FAILED: ${error.message}`);
  console.log('sequelize: 0 passed, 1 failed');
  process.exit(1);
});
