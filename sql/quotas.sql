-- Limits shared by every process on the database: throttled logins and registrations, and the
-- per-user cap on open front-end sockets (migration 0005).

-- A login in one round trip: count the attempt for the account and for the client address, and
-- look the user up: by exact name first (accounts that predate normalisation keep their
-- spelling), else by the NFKC form. `*_retry_after` (seconds) is set when that count is over its
-- limit; the caller then answers 429 without hashing anything.
-- name: start_login(username, account, address, max_account, max_address, window_seconds)^
WITH counted AS (
    INSERT INTO login_attempts AS a (scope, key, window_start, attempts)
    VALUES ('account', :account, now(), 1), ('address', :address, now(), 1)
    ON CONFLICT (scope, key) DO UPDATE SET
        window_start = CASE WHEN a.window_start <= now() - make_interval(secs => :window_seconds::float8)
                            THEN now() ELSE a.window_start END,
        attempts = CASE WHEN a.window_start <= now() - make_interval(secs => :window_seconds::float8)
                        THEN 1 ELSE a.attempts + 1 END
    RETURNING scope, attempts, window_start
), found AS (
    SELECT u.id, u.password FROM users u WHERE u.username = :username
    UNION ALL
    SELECT u.id, u.password FROM username_keys k JOIN users u ON u.id = k.user_id
    WHERE k.key = :account AND u.username <> :username
)
SELECT f.id, f.password, r.account_retry_after, r.address_retry_after
FROM (SELECT max(ceil(extract(epoch FROM window_start + make_interval(secs => :window_seconds::float8) - now())))
                 FILTER (WHERE scope = 'account' AND attempts > :max_account::int)::int AS account_retry_after,
             max(ceil(extract(epoch FROM window_start + make_interval(secs => :window_seconds::float8) - now())))
                 FILTER (WHERE scope = 'address' AND attempts > :max_address::int)::int AS address_retry_after
      FROM counted) r
LEFT JOIN (SELECT id, password FROM found LIMIT 1) f ON true;

-- A successful login: the account starts afresh, and the address is not charged for it.
-- name: finish_login(account, address)!
WITH forgotten AS (
    DELETE FROM login_attempts WHERE scope = 'account' AND key = :account
)
UPDATE login_attempts SET attempts = greatest(attempts - 1, 0)
WHERE scope = 'address' AND key = :address;

-- Count one registration attempt of a client address; `retry_after` as for logins.
-- name: count_registration(address, max_attempts, window_seconds)$
WITH counted AS (
    INSERT INTO login_attempts AS a (scope, key, window_start, attempts)
    VALUES ('register', :address, now(), 1)
    ON CONFLICT (scope, key) DO UPDATE SET
        window_start = CASE WHEN a.window_start <= now() - make_interval(secs => :window_seconds::float8)
                            THEN now() ELSE a.window_start END,
        attempts = CASE WHEN a.window_start <= now() - make_interval(secs => :window_seconds::float8)
                        THEN 1 ELSE a.attempts + 1 END
    RETURNING attempts, window_start
)
SELECT ceil(extract(epoch FROM window_start + make_interval(secs => :window_seconds::float8) - now()))::int
FROM counted WHERE attempts > :max_attempts::int;

-- name: prune_login_attempts(window_seconds)!
DELETE FROM login_attempts WHERE window_start < now() - make_interval(secs => :window_seconds::float8);

-- The checks of the socket handshake and, when they pass, one of the user's socket slots, in one
-- round trip. `slot` is null when a check failed, false when every slot is taken.
-- name: open_chat_socket(user_id, session_id, slot_id, owner, max_sockets, ttl_seconds)^
WITH checked AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id) AS user_exists,
           EXISTS (SELECT 1 FROM chatconversations
                   WHERE session_id = :session_id AND creator_id IS DISTINCT FROM :user_id) AS foreign_session
)
SELECT user_exists, foreign_session,
       CASE WHEN user_exists AND NOT foreign_session
            THEN take_socket_slot(:user_id, :slot_id, :owner, :max_sockets::int, :ttl_seconds::float8) END AS slot
FROM checked;

-- name: release_socket_slot(slot_id)!
DELETE FROM socket_slots WHERE id = :slot_id;

-- Refresh this process's slots; a slot that went stale and was taken away (a long stall) comes back.
-- name: refresh_socket_slots(slot_ids, user_ids, owner)!
INSERT INTO socket_slots (id, user_id, owner, heartbeat_at)
SELECT slot, usr, :owner, now() FROM unnest(:slot_ids::uuid[], :user_ids::uuid[]) AS s (slot, usr)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now();

-- name: release_socket_slots_of_owner(owner)!
DELETE FROM socket_slots WHERE owner = :owner;
