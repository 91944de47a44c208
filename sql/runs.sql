-- Claim a run: a new row, or the existing one of this user and request id (`created` tells which).
-- name: claim_run(id, user_id, session_id, request_id, body_hash)^
WITH inserted AS (
    INSERT INTO runs (id, user_id, session_id, request_id, body_hash)
    VALUES (:id, :user_id, :session_id, :request_id, :body_hash)
    ON CONFLICT (user_id, request_id) DO NOTHING
    RETURNING *
)
SELECT *, true AS created FROM inserted
UNION ALL
SELECT *, false AS created FROM runs WHERE user_id = :user_id AND request_id = :request_id
    AND NOT EXISTS (SELECT 1 FROM inserted);

-- A run refused before it started (unknown config, foreign conversation): as if never sent.
-- name: drop_run(id)!
DELETE FROM runs WHERE id = :id;

-- name: get_run(user_id, session_id, request_id)^
SELECT * FROM runs WHERE user_id = :user_id AND session_id = :session_id AND request_id = :request_id;

-- name: get_run_by_request(user_id, request_id)^
SELECT * FROM runs WHERE user_id = :user_id AND request_id = :request_id;

-- Sends of one user are counted one after another: each locks the user's row first, in its
-- transaction (FOR NO KEY UPDATE: the foreign-key checks of other writes do not wait for it).
-- name: lock_user_runs(user_id)^
SELECT id FROM users WHERE id = :user_id FOR NO KEY UPDATE;

-- A user's runs that may still be in flight; older running rows are abandoned (their process died).
-- name: count_running_runs(user_id, younger_than_seconds)$
SELECT count(*) FROM runs
WHERE user_id = :user_id AND state = 'running'
  AND created_at > (now() AT TIME ZONE 'UTC') - make_interval(secs => :younger_than_seconds);

-- name: notify_run_cancelled(id)!
SELECT pg_notify('genai_run_cancels', :id::uuid::text);

-- name: get_run_by_id(id)^
SELECT * FROM runs WHERE id = :id;

-- Append an event to a running run (nothing once it has ended), and wake the readers of every process.
-- name: append_run_event(id, event, data)^
WITH bumped AS (
    UPDATE runs SET last_seq = last_seq + 1 WHERE id = :id AND state = 'running'
    RETURNING id, last_seq
), inserted AS (
    INSERT INTO run_events (run_id, seq, event, data)
    SELECT id, last_seq, :event, :data::jsonb FROM bumped
    RETURNING run_id, seq
)
SELECT run_id, seq, pg_notify('genai_run_events', run_id::text) AS notified FROM inserted;

-- An agent's log line for a running run of this conversation (the bus handler, any process).
-- name: append_run_log(session_id, request_id, data)^
WITH bumped AS (
    UPDATE runs SET last_seq = last_seq + 1
    WHERE session_id = :session_id AND request_id = :request_id AND state = 'running'
    RETURNING id, last_seq
), inserted AS (
    INSERT INTO run_events (run_id, seq, event, data)
    SELECT id, last_seq, 'agent.log', :data::jsonb FROM bumped
    RETURNING run_id, seq
)
SELECT run_id, seq, pg_notify('genai_run_events', run_id::text) AS notified FROM inserted;

-- Lock a run before ending it, so a cancel and the answer cannot both win.
-- name: lock_run(id)^
SELECT state FROM runs WHERE id = :id FOR UPDATE;

-- End a running run with its final event; nothing when it already ended.
-- name: end_run(id, state, answer, event, data)^
WITH ended AS (
    UPDATE runs SET state = :state, answer = :answer::jsonb, last_seq = last_seq + 1,
                    finished_at = now() AT TIME ZONE 'UTC'
    WHERE id = :id AND state = 'running'
    RETURNING id, last_seq
), inserted AS (
    INSERT INTO run_events (run_id, seq, event, data)
    SELECT id, last_seq, :event, :data::jsonb FROM ended
    RETURNING run_id, seq
)
SELECT run_id, seq, pg_notify('genai_run_events', run_id::text) AS notified FROM inserted;

-- name: list_run_events(run_id, after_seq)
SELECT seq, event, data FROM run_events WHERE run_id = :run_id AND seq > :after_seq ORDER BY seq;

-- Events of runs that ended long ago; the runs themselves stay (their answers, idempotency).
-- name: prune_run_events(older_than_seconds)$
WITH deleted AS (
    DELETE FROM run_events e USING runs r
    WHERE e.run_id = r.id AND r.finished_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => :older_than_seconds)
    RETURNING 1
)
SELECT count(*) FROM deleted;

-- The user's model configs as OpenAI models (`provider/config_name`).
-- name: list_user_models(user_id)
SELECT p.name AS provider, c.name AS config_name, c.created_at
FROM modelconfigs c JOIN modelproviders p ON p.id = c.provider_id
WHERE c.creator_id = :user_id AND p.creator_id = :user_id
ORDER BY c.created_at, c.name;

-- A fresh conversation holding a client's earlier messages, in order, before its last one is run.
-- name: create_conversation_with_messages(session_id, creator_id, title, senders, contents)!
WITH conversation AS (
    INSERT INTO chatconversations (session_id, title, creator_id, created_at, updated_at)
    VALUES (:session_id, :title, :creator_id, now(), now())
    RETURNING session_id
)
INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id, created_at, updated_at)
SELECT gen_random_uuid(), gen_random_uuid(), m.sender::sendertype, m.content, c.session_id,
       now() - make_interval(secs => (m.n_total - m.ord) / 1000.0 + 0.001),
       now() - make_interval(secs => (m.n_total - m.ord) / 1000.0 + 0.001)
FROM conversation c,
     (SELECT sender, content, ord, count(*) OVER () AS n_total
      FROM unnest(:senders::text[], :contents::text[]) WITH ORDINALITY AS u(sender, content, ord)) AS m;

-- Runs still `running` long after any invocation could have ended: their process died. Ended as
-- failed, so their readers stop waiting.
-- name: fail_abandoned_runs(older_than_seconds, data)$
WITH ended AS (
    UPDATE runs SET state = 'failed', answer = :data::jsonb, last_seq = last_seq + 1,
                    finished_at = now() AT TIME ZONE 'UTC'
    WHERE state = 'running'
      AND created_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => :older_than_seconds)
    RETURNING id, last_seq
), inserted AS (
    INSERT INTO run_events (run_id, seq, event, data)
    SELECT id, last_seq, 'run.failed', :data::jsonb FROM ended
    RETURNING run_id
)
SELECT count(pg_notify('genai_run_events', run_id::text)) FROM inserted;
