-- depends: 0009_runs
DROP INDEX IF EXISTS ix_runs_running;
