-- name: mark_all_agents_inactive()!
UPDATE agents SET is_active = false WHERE is_active;

-- name: agent_belongs_to(agent_id, creator_id)$
SELECT EXISTS (SELECT 1 FROM agents WHERE id = :agent_id AND creator_id = :creator_id);

-- name: create_agent(agent_id, name, description, input_parameters, alias, jwt, creator_id)^
INSERT INTO agents (id, alias, name, description, jwt, creator_id, input_parameters, is_active,
                    created_at, updated_at, last_invoked_at)
VALUES (:agent_id, :alias, :name, :description, :jwt, :creator_id, :input_parameters, false,
        now(), now(), now())
RETURNING name, description, id, input_parameters, created_at, updated_at, alias, jwt;

-- AgentItem (rest-api #7, #9): the view agent_items (migrations/0003_views.sql) shapes it.
-- name: get_agent(agent_id, creator_id)^
SELECT agent_id, agent_name, agent_description, agent_schema, created_at, updated_at, is_active, agent_jwt, agent_alias
FROM agent_items a
WHERE a.agent_id = :agent_id AND a.creator_id = :creator_id;

-- name: list_agents(creator_id, offset, limit)
SELECT agent_id, agent_name, agent_description, agent_schema, created_at, updated_at, is_active, agent_jwt, agent_alias
FROM agent_items a
WHERE a.creator_id = :creator_id AND a.agent_name <> '' AND a.agent_description <> ''
ORDER BY a.created_at ASC, a.agent_id
OFFSET :offset LIMIT :limit;

-- name: list_agents_by_name(creator_id, name, offset, limit)
SELECT agent_id, agent_name, agent_description, agent_schema, created_at, updated_at, is_active, agent_jwt, agent_alias
FROM agent_items a
WHERE a.creator_id = :creator_id AND a.agent_name = :name
ORDER BY a.created_at DESC, a.agent_id
OFFSET :offset LIMIT :limit;

-- genai-protocol 2.0's get_agents()/get_active_agents(): every agent of the owner, named or not.
-- name: list_agents_frontend(creator_id, is_active)
SELECT agent_id, agent_name, agent_description, agent_schema, created_at, updated_at, is_active, agent_jwt, agent_alias
FROM agent_items a
WHERE a.creator_id = :creator_id AND (:is_active::boolean IS NULL OR a.is_active = :is_active::boolean)
ORDER BY a.created_at ASC, a.agent_id;

-- `pattern` arrives with %, _ and \ escaped (D34).
-- name: list_agents_by_description(creator_id, pattern, offset, limit)
SELECT agent_id, agent_name, agent_description, agent_schema, created_at, updated_at, is_active, agent_jwt, agent_alias
FROM agent_items a
WHERE a.creator_id = :creator_id AND a.agent_description ILIKE '%' || :pattern || '%'
ORDER BY a.created_at DESC, a.agent_id
OFFSET :offset LIMIT :limit;

-- PATCH answers with the alias as `agent_name` and the schema as stored (reference quirk, #10).
-- updated_at must be strictly later than created_at, even within one clock tick.
-- name: update_agent(agent_id, creator_id, name, description, input_parameters)^
UPDATE agents
SET name = :name, description = :description, input_parameters = :input_parameters,
    updated_at = greatest(now(), created_at + interval '1 microsecond'),
    last_invoked_at = now()
WHERE id = :agent_id AND creator_id = :creator_id
RETURNING id AS agent_id, alias AS agent_name, description AS agent_description,
          input_parameters AS agent_schema, created_at, updated_at, is_active, jwt AS agent_jwt,
          alias AS agent_alias;

-- name: delete_agent(agent_id, creator_id)$
DELETE FROM agents WHERE id = :agent_id AND creator_id = :creator_id RETURNING true;

-- The bus: the agent a verified token names (agent-bus.md §5.1).
-- name: get_agent_alias(agent_id, creator_id)$
SELECT alias FROM agents WHERE id = :agent_id AND creator_id = :creator_id;

-- name: activate_agent(agent_id, creator_id, name, description, input_parameters, alias)^
UPDATE agents
SET name = :name, description = :description, input_parameters = :input_parameters,
    alias = :alias, is_active = true,
    updated_at = greatest(now(), created_at + interval '1 microsecond'), last_invoked_at = now()
WHERE id = :agent_id AND creator_id = :creator_id
RETURNING id, creator_id;

-- name: deactivate_agent(agent_id)^
UPDATE agents
SET is_active = false, updated_at = greatest(now(), created_at + interval '1 microsecond'),
    last_invoked_at = now()
WHERE id = :agent_id
RETURNING id, creator_id;

-- name: get_agent_creator(agent_id)$
SELECT creator_id FROM agents WHERE id = :agent_id;

-- GET /api/agents/active (rest-api #8), one row per ActiveItem in answer order: the master agent
-- calls it on every chat message. Flow items first (created_at DESC, never paged), then the
-- listed items:
--   genai/a2a/all: one list ordered created_at DESC, id, with offset/limit;
--   mcp: offset/limit apply to the servers, each server contributes all its tools.
-- Tools carry their server's timestamps. The view builds the tool schemas from `schema`,
-- `title`, `description` and `skills` with the discovery builders (one definition of T() and
-- C()); measured, that is also several times cheaper than jsonb work per row here.
-- name: list_active_connections(creator_id, agent_type, offset, limit)
WITH
genai AS (
    SELECT a.id, a.alias AS name, 'genai' AS type, NULL::text AS url, a.input_parameters AS schema,
           NULL::text AS title, NULL::text AS description, NULL::json AS skills,
           a.created_at, a.updated_at, true AS is_active
    FROM agents a
    WHERE :agent_type::text IN ('genai', 'all') AND a.creator_id = :creator_id AND a.is_active
),
servers AS (
    SELECT s.id, s.server_url, s.created_at, s.updated_at
    FROM mcpservers s
    WHERE :agent_type::text IN ('mcp', 'all') AND s.creator_id = :creator_id AND s.is_active
    ORDER BY s.created_at DESC, s.id
    OFFSET CASE WHEN :agent_type::text = 'mcp' THEN :offset::bigint ELSE 0 END
    LIMIT CASE WHEN :agent_type::text = 'mcp' THEN :limit::bigint END
),
mcp AS (
    -- `all` names every kind by its alias; `mcp` by the raw tool name, without is_active.
    SELECT t.id, CASE WHEN :agent_type::text = 'all' THEN t.alias ELSE t.name END AS name, 'mcp' AS type,
           s.server_url AS url, t."inputSchema" AS schema, t.alias AS title, t.description, NULL::json AS skills,
           s.created_at, s.updated_at, CASE WHEN :agent_type::text = 'all' THEN true END AS is_active
    FROM servers s
    JOIN mcptools t ON t.mcp_server_id = s.id
),
a2a AS (
    SELECT c.id, n.name, 'a2a' AS type, c.server_url AS url, NULL::json AS schema, n.name AS title,
           c.description, c.card_content -> 'skills' AS skills, c.created_at, c.updated_at, true AS is_active
    FROM a2acards c
    CROSS JOIN LATERAL (SELECT CASE WHEN :agent_type::text = 'all' THEN c.alias ELSE c.name END AS name) n
    WHERE :agent_type::text IN ('a2a', 'all') AND c.creator_id = :creator_id AND c.is_active
),
listed AS (
    SELECT * FROM genai UNION ALL SELECT * FROM mcp UNION ALL SELECT * FROM a2a
    ORDER BY created_at DESC, id
    OFFSET CASE WHEN :agent_type::text = 'mcp' THEN 0 ELSE :offset::bigint END
    LIMIT CASE WHEN :agent_type::text = 'mcp' THEN NULL ELSE :limit::bigint END
),
-- Every element the user may put in a flow right now, as `type:id`; built once instead of one
-- lookup per element.
valid AS (
    SELECT coalesce(array_agg(k.key), '{}') AS keys
    FROM flow_member_keys k WHERE k.creator_id = :creator_id AND :agent_type::text IN ('genai', 'all')
),
flows AS (
    -- The schema derives from the first element: its agent's schema or its tool's input schema.
    SELECT f.id, f.alias AS name, 'flow' AS type, NULL::text AS url,
           CASE first.type
               WHEN 'genai' THEN (SELECT a.input_parameters FROM agents a
                                  WHERE a.id = first.uid AND a.creator_id = f.creator_id)
               WHEN 'mcp' THEN (SELECT t."inputSchema" FROM mcptools t WHERE t.id = first.uid)
           END AS schema,
           f.alias AS title, f.description, NULL::json AS skills, f.created_at, f.updated_at, true AS is_active,
           (SELECT json_agg(e.el -> 'id' ORDER BY e.n)
            FROM json_array_elements(f.flow) WITH ORDINALITY AS e(el, n)) AS flow,
           first.type AS first_type
    FROM agentworkflows f
    CROSS JOIN valid
    -- OFFSET 0 keeps this evaluated once per flow (inlined, the regex ran once per agent row).
    CROSS JOIN LATERAL (
        SELECT CASE WHEN f.flow -> 0 ->> 'id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN (f.flow -> 0 ->> 'id')::uuid END AS uid,
               f.flow -> 0 ->> 'type' AS type
        OFFSET 0
    ) first
    WHERE :agent_type::text IN ('genai', 'all') AND f.creator_id = :creator_id
      AND flow_is_active(f.flow, valid.keys)
)
SELECT id, name, type, url, schema, title, description, skills, flow, first_type, created_at, updated_at, is_active
FROM (
    SELECT 0 AS part, * FROM flows
    UNION ALL
    SELECT 1 AS part, *, NULL, NULL FROM listed
) items
ORDER BY part, created_at DESC, id;
