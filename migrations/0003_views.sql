-- Views and a function the queries share, so each rule is written once.
-- depends: 0002_contract_changes

-- What an owner may put in a flow right now, as `type:id` (background-jobs.md §4): an active
-- agent, a tool of an active server, an active card. Queries filter by creator_id, which
-- PostgreSQL pushes into every branch.
CREATE OR REPLACE VIEW flow_member_keys AS
SELECT a.creator_id, 'genai:' || a.id AS key FROM agents a WHERE a.is_active
UNION ALL
SELECT s.creator_id, 'mcp:' || t.id FROM mcptools t JOIN mcpservers s ON s.id = t.mcp_server_id WHERE s.is_active
UNION ALL
SELECT c.creator_id, 'a2a:' || c.id FROM a2acards c WHERE c.is_active;

-- Is a flow active, given its owner's flow_member_keys as an array (built once per query by the
-- caller)? Every element must be an object whose `type:id` is in the array; an empty or
-- non-array flow never is.
CREATE OR REPLACE FUNCTION flow_is_active(flow json, member_keys text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN json_typeof(flow) <> 'array' THEN false
                WHEN json_array_length(flow) = 0 THEN false
                ELSE NOT EXISTS (
                    SELECT 1 FROM json_array_elements(flow) AS e(el)
                    WHERE json_typeof(e.el) <> 'object'
                       OR NOT coalesce((e.el ->> 'type') || ':' || lower(e.el ->> 'id') = ANY (member_keys), false))
           END
$$;

-- AgentItem (rest-api #7, #9): `function.name` shows the agent's name when `function` is a
-- non-empty object. The jsonb round trip is safe: inputs with NUL characters are refused.
CREATE OR REPLACE VIEW agent_items AS
SELECT a.creator_id, a.id AS agent_id, a.name AS agent_name, a.description AS agent_description,
       CASE WHEN json_typeof(a.input_parameters -> 'function') = 'object'
                 AND a.input_parameters::jsonb -> 'function' <> '{}'::jsonb
            THEN jsonb_set(a.input_parameters::jsonb, '{function,name}', to_jsonb(a.name))::json
            ELSE a.input_parameters END AS agent_schema,
       a.created_at, a.updated_at, a.is_active, a.jwt AS agent_jwt, a.alias AS agent_alias
FROM agents a;
