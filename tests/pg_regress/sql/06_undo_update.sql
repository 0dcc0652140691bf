-- examples/06_undo_update.sql, replayed as written: its output is the expected output.
\i examples/06_undo_update.sql
