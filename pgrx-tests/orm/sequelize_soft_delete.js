// Sequelize deleting rows of a soft-delete table through its own destroy
// API: it must see exactly one row affected, raise nothing, and the row must
// still be in the table. Run by scripts/test against the cluster that
// preloads pg_invariants (PGI_HOST, PGI_PRELOAD_PORT).
const { Client } = require('pg');
const { Sequelize, DataTypes } = require('sequelize');

const host = process.env.PGI_HOST || '127.0.0.1';
const port = Number(process.env.PGI_PRELOAD_PORT || 28919);
const db = 'pgi_orm_sequelize';

async function main() {
  const admin = new Client({ host, port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();

  const sequelize = new Sequelize(db, 'postgres', '', { host, port, dialect: 'postgres', logging: false });
  await sequelize.query(`CREATE EXTENSION pg_invariants;
    CREATE TABLE users (id int PRIMARY KEY, email text, deleted_at timestamptz);
    INSERT INTO users VALUES (1, 'ana@example.com'), (2, 'bo@example.com');
    SELECT invariants.enable_soft_delete('users');`);
  const User = sequelize.define('User', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    email: DataTypes.TEXT,
    deleted_at: DataTypes.DATE,
  }, { tableName: 'users', timestamps: false });

  const failures = [];
  const destroyed = await User.destroy({ where: { id: 1 } });
  if (destroyed !== 1) failures.push(`Model.destroy reported ${destroyed} rows, expected 1`);
  const user = await User.findByPk(2);
  await user.destroy();
  const [rows] = await sequelize.query('SELECT id FROM users WHERE deleted_at IS NOT NULL ORDER BY id');
  if (rows.length !== 2) failures.push(`${rows.length} rows soft-deleted, expected 2 (both rows still in the table)`);
  await sequelize.close();

  for (const failure of failures) console.log(`sequelize: FAILED: ${failure}`);
  console.log(`sequelize: ${2 - failures.length} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((error) => {
  console.log(`sequelize: FAILED: ${error.message}`);
  console.log('sequelize: 0 passed, 1 failed');
  process.exit(1);
});
