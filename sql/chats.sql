-- Conversations and their messages (rest-api #26-#30, websocket.md §3), scoped by creator.

-- name: list_chats(creator_id, offset, limit)
SELECT session_id, title, created_at, updated_at
FROM chatconversations
WHERE creator_id = :creator_id
ORDER BY created_at DESC, session_id
OFFSET :offset LIMIT :limit;

-- name: create_chat(session_id, title, creator_id)^
INSERT INTO chatconversations (session_id, title, creator_id, created_at, updated_at)
VALUES (:session_id, :title, :creator_id, now(), now())
RETURNING session_id, title, created_at, updated_at, creator_id;

-- name: rename_chat(creator_id, session_id, title)^
UPDATE chatconversations SET title = :title, updated_at = now()
WHERE session_id = :session_id AND creator_id = :creator_id
RETURNING session_id, title, created_at, updated_at, creator_id;

-- Messages go with it (FK cascade).
-- name: delete_chat(creator_id, session_id)^
DELETE FROM chatconversations WHERE session_id = :session_id AND creator_id = :creator_id RETURNING session_id;

-- One page of a conversation, newest first, and the total, in one round trip: the count row is
-- always there, the page columns are null when the page is empty (or the chat is not the caller's).
-- name: list_chat_messages(creator_id, session_id, offset, limit)
SELECT total.count AS total_count, page.sender_type::text AS sender_type, page.content, page.request_id,
       page.created_at
FROM (SELECT count(*) AS count
      FROM chatmessages m JOIN chatconversations c ON c.session_id = m.conversation_id
      WHERE c.session_id = :session_id AND c.creator_id = :creator_id) AS total
LEFT JOIN LATERAL (
    SELECT m.sender_type, m.content, m.request_id, m.created_at
    FROM chatmessages m JOIN chatconversations c ON c.session_id = m.conversation_id
    WHERE c.session_id = :session_id AND c.creator_id = :creator_id
    ORDER BY m.created_at DESC, m.id
    OFFSET :offset LIMIT :limit) AS page ON true;

-- The WebSocket handshake (websocket.md §1): does the user exist, and is the session someone else's (D28)?
-- name: check_chat_socket(user_id, session_id)^
SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id) AS user_exists,
       EXISTS (SELECT 1 FROM chatconversations
               WHERE session_id = :session_id AND creator_id IS DISTINCT FROM :user_id) AS foreign_session;

-- Steps 2, 3, 5 and 6 of websocket.md §3 in one round trip: resolve the caller's provider and
-- config (`llm`), and only if both exist and the provider's key is the one the caller could
-- decrypt (`api_key`, null = none; D08: validate first, then write), ensure the conversation,
-- attach the caller's files to this request and store the user message. A caller that has not
-- seen this key yet gets the configuration back with `ready` false, decrypts, and calls again.
-- `stored` is false when the conversation belongs to someone else.
-- name: start_chat_turn(creator_id, provider, config_name, api_key, session_id, title, request_id, message, file_ids)^
WITH llm AS (
    SELECT p.id AS provider_id, p.name AS provider, p.api_key, p.provider_metadata AS metadata,
           c.id AS config_id, c.name AS config_name, c.model, c.temperature, c.system_prompt, c.user_prompt,
           c.max_last_messages, c.credentials
    FROM (SELECT 1) AS one
    LEFT JOIN modelproviders p ON p.creator_id = :creator_id AND p.name = :provider
    LEFT JOIN modelconfigs c ON c.creator_id = :creator_id AND c.name = :config_name
), ready AS (
    SELECT 1 FROM llm
    WHERE provider_id IS NOT NULL AND config_id IS NOT NULL AND api_key IS NOT DISTINCT FROM :api_key::varchar
), created AS (
    INSERT INTO chatconversations (session_id, title, creator_id, created_at, updated_at)
    SELECT :session_id, :title, :creator_id, now(), now() FROM ready
    ON CONFLICT (session_id) DO NOTHING
    RETURNING session_id
), conversation AS (
    SELECT session_id FROM created
    UNION ALL
    SELECT session_id FROM chatconversations
    WHERE session_id = :session_id AND creator_id = :creator_id AND EXISTS (SELECT 1 FROM ready)
), attached AS (
    UPDATE files SET session_id = :session_id, request_id = :request_id
    WHERE id = ANY(:file_ids::uuid[]) AND creator_id = :creator_id AND EXISTS (SELECT 1 FROM conversation)
    RETURNING id, session_id, request_id, original_name, mimetype, internal_id, internal_name, from_agent,
              creator_id
), message AS (
    INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id, created_at, updated_at)
    SELECT gen_random_uuid(), :request_id, 'user', :message, session_id, now(), now()
    FROM conversation LIMIT 1
    RETURNING id
)
SELECT llm.*, EXISTS (SELECT 1 FROM ready) AS ready, EXISTS (SELECT 1 FROM message) AS stored,
       coalesce((SELECT json_agg(json_build_object(
                    'id', a.id, 'session_id', a.session_id, 'request_id', a.request_id,
                    'original_name', a.original_name, 'mimetype', a.mimetype, 'internal_id', a.internal_id,
                    'internal_name', a.internal_name, 'from_agent', a.from_agent, 'creator_id', a.creator_id)
                    ORDER BY array_position(:file_ids::uuid[], a.id))
                 FROM attached a), '[]'::json) AS files
FROM llm;

-- Steps 9 and 10: store the master agent's answer, and list the caller's files of this request
-- (attachments and files agents uploaded meanwhile).
-- name: finish_chat_turn(session_id, creator_id, request_id, content)^
WITH message AS (
    INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id, created_at, updated_at)
    SELECT gen_random_uuid(), :request_id, 'master_agent', :content, session_id, now(), now()
    FROM chatconversations WHERE session_id = :session_id AND creator_id = :creator_id
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM message) AS stored,
       coalesce((SELECT json_agg(json_build_object(
                    'id', f.id, 'session_id', f.session_id, 'request_id', f.request_id,
                    'original_name', f.original_name, 'mimetype', f.mimetype, 'internal_id', f.internal_id,
                    'internal_name', f.internal_name, 'from_agent', f.from_agent, 'creator_id', f.creator_id)
                    ORDER BY f.created_at, f.id)
                 FROM files f WHERE f.request_id = :request_id AND f.creator_id = :creator_id), '[]'::json) AS files;
