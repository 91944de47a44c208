-- Usernames unique in their NFKC form, and the shared state of the per-user limits (open chat
-- sockets, login and registration attempts), kept here so that every process on this database
-- enforces the same limits.
-- depends: 0004_catalogue_changes

-- One row per account: the NFKC form of its username. Kept beside `users` (whose schema is the
-- reference's) and filled by a trigger, so every writer, not only this service, is held to it.
CREATE TABLE IF NOT EXISTS username_keys (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    key text NOT NULL UNIQUE
);

-- A database taken over from the reference may already hold names equal after normalisation
-- (`admin` and fullwidth `ａｄｍｉｎ`): the oldest keeps the key, the others keep working under
-- their exact spelling, and no new account can take any of those names.
INSERT INTO username_keys (user_id, key)
SELECT id, normalize(username, NFKC) FROM users ORDER BY created_at, id
ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION note_username_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM username_keys WHERE user_id = NEW.id;
    END IF;
    -- A clash raises unique_violation and so refuses the INSERT or UPDATE of the user.
    INSERT INTO username_keys (user_id, key) VALUES (NEW.id, normalize(NEW.username, NFKC));
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS users_username_key ON users;
CREATE TRIGGER users_username_key AFTER INSERT OR UPDATE OF username ON users
    FOR EACH ROW EXECUTE FUNCTION note_username_key();

-- One row per open front-end socket. A row counts while its heartbeat is fresh, so the sockets of
-- a process that was killed stop counting by themselves.
CREATE TABLE IF NOT EXISTS socket_slots (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    -- The process holding the socket (a random id per start).
    owner uuid NOT NULL,
    heartbeat_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_socket_slots_user_id ON socket_slots (user_id);

-- Count and take under one lock per user, so two processes cannot both take the last slot.
CREATE OR REPLACE FUNCTION take_socket_slot(p_user uuid, p_slot uuid, p_owner uuid, p_max integer,
                                            p_ttl double precision) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- 0x736f636b: "sock", the first key of the pair, apart from the jobs' single-key locks.
    PERFORM pg_advisory_xact_lock(1936679787, hashtext(p_user::text));
    DELETE FROM socket_slots
    WHERE user_id = p_user AND heartbeat_at < clock_timestamp() - make_interval(secs => p_ttl);
    IF (SELECT count(*) FROM socket_slots WHERE user_id = p_user) >= p_max THEN
        RETURN false;
    END IF;
    INSERT INTO socket_slots (id, user_id, owner, heartbeat_at) VALUES (p_slot, p_user, p_owner, clock_timestamp());
    RETURN true;
END $$;

-- Attempts per key in a fixed window: scope 'account' (NFKC username), 'address' (client
-- address, IPv6 by /64) for logins, 'register' (client address) for registrations.
CREATE TABLE IF NOT EXISTS login_attempts (
    scope text NOT NULL,
    key text NOT NULL,
    window_start timestamp with time zone NOT NULL,
    attempts integer NOT NULL,
    PRIMARY KEY (scope, key)
);
