-- Stored secrets (provider API keys, MCP request headers) for SECRET_KEY rotation (auth/rotation.py).

-- name: count_secrets_by_key_id()
SELECT secret_key_id, count(*) AS n FROM (
    SELECT secret_key_id FROM modelproviders WHERE api_key IS NOT NULL
    UNION ALL
    SELECT secret_key_id FROM mcpservers WHERE headers IS NOT NULL
) s
GROUP BY secret_key_id;

-- name: sample_unmarked_secrets(limit)
-- Secrets whose key is not recorded (the reference's, older rows, rewritten ones): a few to try.
(SELECT api_key AS secret FROM modelproviders WHERE api_key IS NOT NULL AND secret_key_id IS NULL LIMIT :limit)
UNION ALL
(SELECT headers FROM mcpservers WHERE headers IS NOT NULL AND secret_key_id IS NULL LIMIT :limit);

-- name: claim_provider_secrets(key_id, after, skip, limit)
-- Locked until the batch commits; rows another rotation (or an edit) holds are skipped, not awaited.
SELECT id, api_key AS secret, secret_key_id FROM modelproviders
WHERE api_key IS NOT NULL AND secret_key_id IS DISTINCT FROM :key_id AND id > :after
  AND NOT (id = ANY(:skip::uuid[]))
ORDER BY id LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: claim_mcp_secrets(key_id, after, skip, limit)
SELECT id, headers AS secret, secret_key_id FROM mcpservers
WHERE headers IS NOT NULL AND secret_key_id IS DISTINCT FROM :key_id AND id > :after
  AND NOT (id = ANY(:skip::uuid[]))
ORDER BY id LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: store_provider_secret(id, old, new, key_id)$
-- Compare-and-set on the old ciphertext as well as the lock: nothing written meanwhile is lost.
UPDATE modelproviders SET api_key = :new, secret_key_id = :key_id
WHERE id = :id AND api_key = :old
RETURNING id;

-- name: store_mcp_secret(id, old, new, key_id)$
UPDATE mcpservers SET headers = :new, secret_key_id = :key_id
WHERE id = :id AND headers = :old
RETURNING id;

-- name: count_secrets_not_under(key_id)$
SELECT (SELECT count(*) FROM modelproviders WHERE api_key IS NOT NULL AND secret_key_id IS DISTINCT FROM :key_id)
     + (SELECT count(*) FROM mcpservers WHERE headers IS NOT NULL AND secret_key_id IS DISTINCT FROM :key_id);

-- name: claim_agent_tokens(after, limit)
-- Agent JWTs are stored for their owners to copy (GET /api/agents/...), and never expire.
SELECT id, jwt, creator_id FROM agents WHERE id > :after ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED;

-- name: store_agent_token(id, old, new)$
UPDATE agents SET jwt = :new WHERE id = :id AND jwt = :old RETURNING id;
