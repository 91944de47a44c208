-- Which owners' catalogues changed, and in which transaction, so that a cached answer of
-- GET /api/agents/ or /api/agents/active can be checked against the database in one cheap query
-- (genai_backend/catalogues.py). Rows are only ever inserted by triggers: no row is updated, so
-- concurrent writers never wait on each other here.
-- depends: 0003_views

CREATE TABLE IF NOT EXISTS catalogue_changes (
    -- The nil uuid stands for every owner (a TRUNCATE cannot say whose rows went).
    creator_id uuid NOT NULL,
    xact xid8 NOT NULL DEFAULT pg_current_xact_id(),
    changed_at timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS ix_catalogue_changes_creator_xact ON catalogue_changes (creator_id, xact);

-- One statement-level trigger per table and event: the owners of every row the statement touched
-- (a tool's owner is its server's), once each.
CREATE OR REPLACE FUNCTION note_catalogue_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner text := CASE TG_TABLE_NAME
        WHEN 'mcptools' THEN '(SELECT s.creator_id FROM mcpservers s WHERE s.id = r.mcp_server_id)'
        ELSE 'r.creator_id' END;
    touched text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT * FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT * FROM old_rows'
        ELSE 'SELECT * FROM new_rows UNION ALL SELECT * FROM old_rows' END;
BEGIN
    -- Emptying the records themselves (consumers' test clean-ups DELETE FROM every table) must
    -- not make forgotten changes look like no changes: it counts as a change for everyone.
    IF TG_OP = 'TRUNCATE' OR TG_TABLE_NAME = 'catalogue_changes' THEN
        INSERT INTO catalogue_changes (creator_id) VALUES ('00000000-0000-0000-0000-000000000000');
    ELSE
        EXECUTE format('INSERT INTO catalogue_changes (creator_id) '
                       'SELECT DISTINCT o FROM (SELECT %s AS o FROM (%s) r) x WHERE o IS NOT NULL',
                       owner, touched);
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'agentworkflows', 'mcpservers', 'mcptools', 'a2acards'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_insert ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_update ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_delete ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_truncate ON %I', t);
        EXECUTE format('CREATE TRIGGER catalogue_change_insert AFTER INSERT ON %I '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION note_catalogue_change()', t);
        EXECUTE format('CREATE TRIGGER catalogue_change_update AFTER UPDATE ON %I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION note_catalogue_change()', t);
        EXECUTE format('CREATE TRIGGER catalogue_change_delete AFTER DELETE ON %I '
                       'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION note_catalogue_change()', t);
        EXECUTE format('CREATE TRIGGER catalogue_change_truncate AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION note_catalogue_change()', t);
    END LOOP;
    DROP TRIGGER IF EXISTS catalogue_change_delete ON catalogue_changes;
    DROP TRIGGER IF EXISTS catalogue_change_truncate ON catalogue_changes;
    CREATE TRIGGER catalogue_change_delete AFTER DELETE ON catalogue_changes
        FOR EACH STATEMENT EXECUTE FUNCTION note_catalogue_change();
    CREATE TRIGGER catalogue_change_truncate AFTER TRUNCATE ON catalogue_changes
        FOR EACH STATEMENT EXECUTE FUNCTION note_catalogue_change();
END
$$;
