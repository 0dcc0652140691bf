-- examples/05_import_counts.sql, replayed as written: its output is the expected output.
\i examples/05_import_counts.sql
