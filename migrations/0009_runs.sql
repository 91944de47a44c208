-- Runs: one chat message and its answer, with numbered events for SSE streams and resumption.
-- A run's request_id is chosen by the client (idempotency) or the service; it is unique per user.
-- `last_seq` is the number of the run's newest event: bumping it locks the row, so events of a run
-- are numbered without gaps even when log lines and the answer race.
-- depends: 0008_api_keys

CREATE TABLE IF NOT EXISTS runs (
    id uuid NOT NULL PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id uuid NOT NULL,
    request_id uuid NOT NULL,
    state character varying(16) NOT NULL DEFAULT 'running',
    body_hash bytea NOT NULL,
    answer jsonb,
    last_seq integer NOT NULL DEFAULT 0,
    created_at timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    finished_at timestamp without time zone,
    CONSTRAINT uq_runs_user_request UNIQUE (user_id, request_id),
    CONSTRAINT ck_runs_state CHECK (state IN ('running', 'completed', 'failed', 'cancelled'))
);
CREATE INDEX IF NOT EXISTS ix_runs_session_request ON runs (session_id, request_id);
CREATE INDEX IF NOT EXISTS ix_runs_created_at ON runs (created_at);

CREATE TABLE IF NOT EXISTS run_events (
    run_id uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    event character varying(32) NOT NULL,
    data jsonb NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (run_id, seq)
);
