-- examples/04_guards.sql, replayed as written: its output is the expected output.
\i examples/04_guards.sql
