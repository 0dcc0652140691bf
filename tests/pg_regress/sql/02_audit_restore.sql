-- examples/02_audit_restore.sql, replayed as written: its output is the expected output.
\i examples/02_audit_restore.sql
