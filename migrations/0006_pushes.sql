-- Frames for users' sockets, shared by every process (genai_backend/fanout.py): a publisher
-- inserts the frame and notifies its id; each process's listener reads the rows after the last id
-- it saw, so a NOTIFY payload never carries the frame (8000-byte limit) and a listener that was
-- disconnected replays the gap. Pruned by a job after a bounded retention.
-- depends: 0005_limits_and_usernames
CREATE TABLE IF NOT EXISTS pushes (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL,
    frame text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pushes_created_at_idx ON pushes (created_at);
