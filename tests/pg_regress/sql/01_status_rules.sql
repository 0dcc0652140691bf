-- examples/01_status_rules.sql, replayed as written: its output is the expected output.
\i examples/01_status_rules.sql
