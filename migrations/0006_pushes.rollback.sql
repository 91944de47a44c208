-- depends: 0004_catalogue_changes
DROP TABLE IF EXISTS pushes;
