-- depends: 0003_views
-- CASCADE takes the triggers with it, on every table.
DROP FUNCTION IF EXISTS note_catalogue_change() CASCADE;
DROP TABLE IF EXISTS catalogue_changes;
