-- name: create_api_key(key_id, user_id, name, prefix, key_hash, scopes, expires_at)^
INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at)
VALUES (:key_id, :user_id, :name, :prefix, :key_hash, :scopes, :expires_at)
RETURNING id, name, prefix, scopes, expires_at, created_at, last_used_at;

-- name: list_api_keys_by_user(user_id)
SELECT id, name, prefix, scopes, expires_at, created_at, last_used_at
FROM api_keys
WHERE user_id = :user_id
ORDER BY created_at, id;

-- name: delete_api_key(key_id, user_id)$
DELETE FROM api_keys WHERE id = :key_id AND user_id = :user_id RETURNING id;

-- name: authenticate_api_key(key_hash)^
-- One indexed lookup per request. `last_used_at` is written at most once a minute per key, in
-- the same statement: an UPDATE that matches no row writes nothing (no transaction id, no WAL).
WITH found AS (
    SELECT id, user_id, scopes, last_used_at,
           (expires_at > (now() AT TIME ZONE 'UTC')) IS NOT FALSE AS live
    FROM api_keys
    WHERE key_hash = :key_hash
), touched AS (
    UPDATE api_keys k SET last_used_at = now() AT TIME ZONE 'UTC'
    FROM found f
    WHERE k.id = f.id AND f.live
      AND (f.last_used_at IS NULL OR f.last_used_at < (now() AT TIME ZONE 'UTC') - interval '1 minute')
)
SELECT id, user_id, scopes, live FROM found;
