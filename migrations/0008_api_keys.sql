-- API keys (`gk_...`): long-lived credentials a user creates for programs. Only the SHA-256 of a
-- key is stored; the key itself is shown once, at creation. A revoked key is a deleted row, so
-- the per-request lookup by hash is all it takes to refuse it on every process at once.
-- depends: 0007_tool_credentials_and_cards

CREATE TABLE IF NOT EXISTS api_keys (
    id uuid NOT NULL PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name character varying(100) NOT NULL,
    prefix character varying(16) NOT NULL,
    key_hash bytea NOT NULL,
    scopes text[] NOT NULL,
    expires_at timestamp without time zone,
    created_at timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    last_used_at timestamp without time zone,
    CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash),
    CONSTRAINT ck_api_keys_hash_length CHECK (octet_length(key_hash) = 32),
    CONSTRAINT ck_api_keys_scopes CHECK (
        cardinality(scopes) > 0 AND scopes <@ ARRAY['chat', 'read', 'manage']::text[])
);
CREATE INDEX IF NOT EXISTS ix_api_keys_user_id ON api_keys (user_id, created_at);
