-- name: try_job_lock(lock_key)$
-- Session-level: held by the job's own connection until released (or the connection ends), so
-- two service instances on one database never run the same job at once.
SELECT pg_try_advisory_lock(:lock_key::bigint);

-- name: release_job_lock(lock_key)$
SELECT pg_advisory_unlock(:lock_key::bigint);

-- name: delete_expired_logs(days, batch)$
-- By `created_at`, the column that exists (D21); in batches, so a large backlog never holds one
-- long transaction. `created_at` is naive UTC.
WITH expired AS (
    SELECT id FROM logs
    WHERE created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => :days::int)
    LIMIT :batch::int
), deleted AS (
    DELETE FROM logs l USING expired e WHERE l.id = e.id RETURNING 1
)
SELECT count(*) FROM deleted;
