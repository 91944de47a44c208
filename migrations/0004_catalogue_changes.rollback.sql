-- depends: 0003_views
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'agentworkflows', 'mcpservers', 'mcptools', 'a2acards'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_insert ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_update ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_delete ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS catalogue_change_truncate ON %I', t);
    END LOOP;
END
$$;
DROP TABLE IF EXISTS catalogue_changes;
DROP FUNCTION IF EXISTS note_catalogue_change();
