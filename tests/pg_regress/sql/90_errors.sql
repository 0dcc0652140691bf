-- What a user sees for each mistake: SQLSTATE, message, DETAIL and HINT.
-- A change to any of them shows up here as a diff.
CREATE SCHEMA mistakes;
SET search_path = mistakes, public;
CREATE TABLE orders (id int PRIMARY KEY, status text, shipped_at timestamptz,
                     total numeric GENERATED ALWAYS AS (id * 2) STORED, items int);
CREATE TABLE lines (id int PRIMARY KEY, order_id int REFERENCES orders, note text);
CREATE TABLE plain (n int);

-- Declaring rules.
SELECT invariants.add_rule('orders', 'r', 'no_such_kind', '{}');
SELECT invariants.add_rule('orders', 'r', 'require_not_null', '[1]');
SELECT invariants.add_rule('orders', 'r', 'write_once', '{"column": "status", "colour": "red"}');
SELECT invariants.add_rule('orders', 'r', 'write_once', '{"column": "status", "mode": "sometimes"}');
SELECT invariants.add_rule(NULL, 'r', 'write_once', '{"column": "status"}');
SELECT invariants.require_not_null('orders', 'shipped_at', 'no_such_column', ARRAY['shipped']);
SELECT invariants.require_not_null('orders', 'shipped_at', 'status', ARRAY[]::text[]);
SELECT invariants.require_not_null('orders', 'total', 'status', ARRAY['shipped']);
SELECT invariants.require_not_null('orders', 'shipped_at', 'id', ARRAY['one']);
SELECT invariants.require_not_null('orders', 'shipped_at', 'status', ARRAY['shipped'], message => ' ');
SELECT invariants.require_not_null('orders', 'shipped_at', 'status', ARRAY['shipped'],
         repair => '{"set": {"total": 1}}');
SELECT invariants.require_not_null('orders', 'shipped_at', 'status', ARRAY['shipped'],
         repair => '{"touch": ["status"]}');
SELECT invariants.allow_transitions('orders', 'status', '{}');
SELECT invariants.write_once('orders', 'status', mode => 'sometimes');
SELECT invariants.require_count('orders', 'items', 'lines', 'note');
SELECT invariants.require_count('orders', 'items', 'no_such_table', 'order_id');
SELECT invariants.drop_rule('orders', 'never_declared');

-- Rules at work.
SELECT invariants.require_not_null('orders', 'shipped_at', 'status', ARRAY['shipped']);
SELECT invariants.allow_transitions('orders', 'status', '{"new": ["paid"], "paid": ["shipped"], "shipped": []}');
INSERT INTO orders (id, status) VALUES (1, 'shipped');
INSERT INTO orders (id, status) VALUES (1, 'new');
UPDATE orders SET status = 'shipped', shipped_at = now();
UPDATE orders SET status = 'lost';
SELECT * FROM invariants.violations('plain');
SELECT * FROM invariants.violating_rows('orders', 'no_such_rule');
SELECT * FROM invariants.repair('orders', 'no_such_rule');

-- Audit and restore.
SELECT invariants.enable_audit('orders', truncate_capture_limit => -1);
SELECT invariants.enable_audit('orders', updates => true, exclude => ARRAY['no_such_column']);
SELECT invariants.enable_audit('orders', exclude => ARRAY['id']);
SELECT invariants.enable_audit('plain', updates => true);
SELECT * FROM invariants.restore();
SELECT * FROM invariants.restore(tbl => 'orders');
DELETE FROM invariants.audit_log;
UPDATE invariants.audit_log SET op = 'DELETE';
TRUNCATE invariants.audit_log;

-- Guards.
SELECT invariants.protect('orders', max_delete_rows => -5);
SELECT invariants.protect('orders', max_delete_rows => 1);
INSERT INTO orders (id, status) SELECT g, 'new' FROM generate_series(2, 4) g;
DELETE FROM orders;
TRUNCATE orders;
DROP TABLE orders CASCADE;
ALTER TABLE orders DROP COLUMN shipped_at;
ALTER TABLE orders SET UNLOGGED;
ALTER TRIGGER invariants_truncate ON orders RENAME TO t;
ALTER TABLE orders DISABLE TRIGGER invariants_audit_delete;
SET invariants.max_delete_rows = -1;

-- Soft delete.
SELECT invariants.enable_soft_delete('plain');
SELECT invariants.enable_soft_delete('plain', column => NULL);
SELECT invariants.purge('plain');
SELECT invariants.undelete('plain', now());

-- Arguments that are not tables.
SELECT invariants.enable_audit('no_such_table');
SELECT invariants.protect('invariants.audit_log');
CREATE VIEW v AS SELECT 1 AS one;
SELECT invariants.enable_audit('v');

RESET search_path;
