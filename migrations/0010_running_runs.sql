-- The per-user cap on runs in flight (MAX_RUNS_PER_USER) counts a user's running runs on every
-- send: this keeps that count to the few running rows, however long the user's history.
-- depends: 0009_runs

CREATE INDEX IF NOT EXISTS ix_runs_running ON runs (user_id, created_at) WHERE state = 'running';
