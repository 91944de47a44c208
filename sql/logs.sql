-- The owner (D04): the agent's creator; for the master agent the owner of the conversation the
-- log belongs to; otherwise nobody (null). `agent_uuid` is the sender id parsed as a uuid, or null.
-- name: create_log(session_id, request_id, agent_id, agent_uuid, message, log_level)^
INSERT INTO logs (session_id, request_id, agent_id, creator_id, message, log_level, created_at, updated_at)
VALUES (:session_id, :request_id, :agent_id,
        CASE WHEN :agent_id::varchar = 'master_server_ml'
             THEN (SELECT creator_id FROM chatconversations WHERE session_id = :session_id)
             ELSE (SELECT creator_id FROM agents WHERE id = :agent_uuid::uuid) END,
        :message, :log_level, now(), now())
RETURNING session_id, request_id, log_level, message, creator_id, agent_id, created_at, updated_at;

-- name: list_logs_by_request(creator_id, request_id)
SELECT session_id, request_id, log_level, message, creator_id, agent_id, created_at, updated_at
FROM logs
WHERE creator_id = :creator_id AND request_id = :request_id
ORDER BY id;

-- name: list_logs_by_session(creator_id, session_id)
SELECT session_id, request_id, log_level, message, creator_id, agent_id, created_at, updated_at
FROM logs
WHERE creator_id = :creator_id AND session_id = :session_id
ORDER BY id;

-- Every model-config credential of the conversation's owner, for redacting master agent logs.
-- name: list_credentials_by_session(session_id)
SELECT DISTINCT v.key, v.value
FROM chatconversations c
JOIN modelconfigs m ON m.creator_id = c.creator_id
CROSS JOIN LATERAL json_each_text(CASE WHEN json_typeof(m.credentials) = 'object'
                                       THEN m.credentials ELSE '{}'::json END) AS v
WHERE c.session_id = :session_id AND v.value IS NOT NULL;
