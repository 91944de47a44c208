-- The snapshot a cached catalogue answer was read in; the first statement of its REPEATABLE READ
-- transaction, so the answer's queries see exactly this snapshot.
-- name: current_snapshot()$
SELECT pg_current_snapshot()::text;

-- Has the owner's catalogue (or everyone's: the nil uuid) changed in a transaction that the
-- snapshot does not see? Only transactions from the snapshot's xmin on can be unseen, which keeps
-- this to the newest few index entries however many rows the table holds.
-- name: catalogue_changed_since(creator_id, snapshot)$
SELECT EXISTS (
    SELECT 1 FROM catalogue_changes c
    WHERE c.creator_id IN (:creator_id, '00000000-0000-0000-0000-000000000000')
      AND c.xact >= pg_snapshot_xmin(:snapshot::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(c.xact, :snapshot::text::pg_snapshot)
);

-- Changes older than any cached answer may be (catalogues.MAX_AGE) are never looked at again.
-- Deleting records counts as a change for everyone (migration 0004): each run costs every cached
-- answer one rebuild, about as often as they expire anyway.
-- name: prune_catalogue_changes(older_than_seconds)$
WITH deleted AS (
    DELETE FROM catalogue_changes
    WHERE changed_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => :older_than_seconds::float8)
    RETURNING 1
)
SELECT count(*) FROM deleted;
