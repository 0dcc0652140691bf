-- examples/03_soft_delete.sql, replayed as written: its output is the expected output.
\i examples/03_soft_delete.sql
