-- The contract's changes to the reference schema; idempotent like 0001_initial.
-- depends: 0001_initial

-- Orders GET /user/files/metadata; existing rows (taken over from the reference) get now().
ALTER TABLE files ADD COLUMN IF NOT EXISTS created_at timestamp without time zone NOT NULL DEFAULT now();

-- D17: configuration names are unique per user, not globally. Swapped in one transaction, so no
-- moment exists without a uniqueness rule.
ALTER TABLE modelconfigs DROP CONSTRAINT IF EXISTS modelconfigs_name_key;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'uq_modelconfigs_creator_name' AND conrelid = 'modelconfigs'::regclass
    ) THEN
        ALTER TABLE modelconfigs ADD CONSTRAINT uq_modelconfigs_creator_name UNIQUE (creator_id, name);
    END IF;
END
$$;

-- The log retention job deletes by age.
CREATE INDEX IF NOT EXISTS ix_logs_created_at ON logs (created_at);

-- The reference generates ids in the application only; a database default lets inserts whose
-- id nobody needs back leave it out. SET DEFAULT is naturally idempotent.
ALTER TABLE users ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE userprofiles ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE agents ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE agentworkflows ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE files ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE modelproviders ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE modelconfigs ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE chatmessages ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE mcpservers ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE mcptools ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE a2acards ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE projects ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE teams ALTER COLUMN id SET DEFAULT gen_random_uuid();
