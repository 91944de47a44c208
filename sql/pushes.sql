-- name: create_push(user_id, frame)$
-- The transaction-level lock orders ids by commit: an id is drawn only after the previous
-- publisher committed, so a reader that has seen id N never later finds a smaller one committed.
-- NOTIFY is delivered at commit, when the row is visible.
WITH locked AS (
    SELECT pg_advisory_xact_lock(7454810566738411524)
), pushed AS (
    INSERT INTO pushes (user_id, frame)
    SELECT :user_id, :frame FROM locked
    RETURNING id
)
SELECT pg_notify('genai_pushes', id::text) FROM pushed;

-- name: list_pushes_after(after_id, batch)
-- Every frame, not only those of users with a socket here: a socket may register while this runs.
SELECT id, user_id, frame FROM pushes WHERE id > :after_id ORDER BY id LIMIT :batch;

-- name: get_last_push_id()$
SELECT coalesce(max(id), 0) FROM pushes;

-- name: prune_pushes(older_than_seconds)$
WITH deleted AS (
    DELETE FROM pushes WHERE created_at < now() - make_interval(secs => :older_than_seconds::float8) RETURNING 1
)
SELECT count(*) FROM deleted;
