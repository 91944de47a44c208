-- depends: 0006_pushes
DROP TRIGGER IF EXISTS modelproviders_secret_key_id ON modelproviders;
DROP TRIGGER IF EXISTS mcpservers_secret_key_id ON mcpservers;
DROP FUNCTION IF EXISTS forget_secret_key_id();
ALTER TABLE modelproviders DROP COLUMN IF EXISTS secret_key_id;
ALTER TABLE mcpservers DROP COLUMN IF EXISTS secret_key_id;
ALTER TABLE mcpservers DROP COLUMN IF EXISTS headers;
ALTER TABLE mcpservers DROP COLUMN IF EXISTS header_names;
ALTER TABLE mcpservers DROP COLUMN IF EXISTS unavailable_reason;
ALTER TABLE a2acards DROP COLUMN IF EXISTS transport;
ALTER TABLE a2acards DROP COLUMN IF EXISTS protocol_version;
ALTER TABLE a2acards DROP COLUMN IF EXISTS endpoint_url;
