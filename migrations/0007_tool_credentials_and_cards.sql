-- A2A interface a card declares, MCP request headers (encrypted), and which SECRET_KEY encrypted each secret.
-- depends: 0006_pushes
ALTER TABLE a2acards ADD COLUMN IF NOT EXISTS endpoint_url character varying;
ALTER TABLE a2acards ADD COLUMN IF NOT EXISTS protocol_version character varying;
ALTER TABLE a2acards ADD COLUMN IF NOT EXISTS transport character varying;

-- Ciphertext (auth/secrets.py format) of a JSON object of header names to values; the names alone
-- in clear, so listings can show them masked without decrypting; why the last lookup failed.
ALTER TABLE mcpservers ADD COLUMN IF NOT EXISTS headers character varying;
ALTER TABLE mcpservers ADD COLUMN IF NOT EXISTS header_names json;
ALTER TABLE mcpservers ADD COLUMN IF NOT EXISTS unavailable_reason character varying;

-- Fingerprint of the key that encrypted the row's secret; null: unknown (written by the reference,
-- or before this migration, or by code that does not know it), found by trying the configured keys.
ALTER TABLE modelproviders ADD COLUMN IF NOT EXISTS secret_key_id character varying;
ALTER TABLE mcpservers ADD COLUMN IF NOT EXISTS secret_key_id character varying;

-- A secret rewritten without its fingerprint forgets the old one, so a stale fingerprint never
-- claims the wrong key (e.g. a process still on the old key saving a provider during a rotation).
CREATE OR REPLACE FUNCTION forget_secret_key_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.secret_key_id := NULL;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS modelproviders_secret_key_id ON modelproviders;
CREATE TRIGGER modelproviders_secret_key_id BEFORE UPDATE OF api_key ON modelproviders
    FOR EACH ROW
    WHEN (NEW.api_key IS DISTINCT FROM OLD.api_key AND NEW.secret_key_id IS NOT DISTINCT FROM OLD.secret_key_id)
    EXECUTE FUNCTION forget_secret_key_id();

DROP TRIGGER IF EXISTS mcpservers_secret_key_id ON mcpservers;
CREATE TRIGGER mcpservers_secret_key_id BEFORE UPDATE OF headers ON mcpservers
    FOR EACH ROW
    WHEN (NEW.headers IS DISTINCT FROM OLD.headers AND NEW.secret_key_id IS NOT DISTINCT FROM OLD.secret_key_id)
    EXECUTE FUNCTION forget_secret_key_id();
