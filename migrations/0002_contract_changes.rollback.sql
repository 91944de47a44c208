-- Back to the reference schema. Re-adding the global unique name fails if two users now share a
-- configuration name: rename one of them first.
ALTER TABLE teams ALTER COLUMN id DROP DEFAULT;
ALTER TABLE projects ALTER COLUMN id DROP DEFAULT;
ALTER TABLE a2acards ALTER COLUMN id DROP DEFAULT;
ALTER TABLE mcptools ALTER COLUMN id DROP DEFAULT;
ALTER TABLE mcpservers ALTER COLUMN id DROP DEFAULT;
ALTER TABLE chatmessages ALTER COLUMN id DROP DEFAULT;
ALTER TABLE modelconfigs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE modelproviders ALTER COLUMN id DROP DEFAULT;
ALTER TABLE files ALTER COLUMN id DROP DEFAULT;
ALTER TABLE agentworkflows ALTER COLUMN id DROP DEFAULT;
ALTER TABLE agents ALTER COLUMN id DROP DEFAULT;
ALTER TABLE userprofiles ALTER COLUMN id DROP DEFAULT;
ALTER TABLE users ALTER COLUMN id DROP DEFAULT;

DROP INDEX IF EXISTS ix_logs_created_at;

ALTER TABLE modelconfigs DROP CONSTRAINT IF EXISTS uq_modelconfigs_creator_name;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'modelconfigs_name_key' AND conrelid = 'modelconfigs'::regclass
    ) THEN
        ALTER TABLE modelconfigs ADD CONSTRAINT modelconfigs_name_key UNIQUE (name);
    END IF;
END
$$;

ALTER TABLE files DROP COLUMN IF EXISTS created_at;
