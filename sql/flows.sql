-- A flow element {id, type} is valid for owner O when (background-jobs.md §4):
--   genai: an agent with that id, created by O, is_active;
--   mcp:   a tool with that id whose server is created by O and is_active;
--   a2a:   a card with that id, created by O, is_active;
-- anything else (no id, no or unknown type) is never valid. Each query first collects O's valid
-- elements as `type:id` keys from the view flow_member_keys (migrations/0003_views.sql), then
-- compares.
-- Element ids are stored canonical (lower-case, hyphenated); `lower` covers rows written by
-- the reference.

-- The valid ones among the given elements (rest-api "active-members check").
-- name: list_valid_flow_members(creator_id, ids, types)
WITH valid AS (
    SELECT coalesce(array_agg(k.key), '{}') AS keys
    FROM flow_member_keys k WHERE k.creator_id = :creator_id
)
SELECT e.id
FROM unnest(:ids::text[], :types::text[]) AS e(id, type)
CROSS JOIN valid
WHERE e.type || ':' || lower(e.id) = ANY (valid.keys);

-- Only rows whose flag changes are written, so updated_at moves only on a real change (D20).
-- name: reevaluate_flows(creator_id)!
WITH valid AS (
    SELECT coalesce(array_agg(k.key), '{}') AS keys
    FROM flow_member_keys k WHERE k.creator_id = :creator_id
),
computed AS (
    SELECT w.id,
           flow_is_active(w.flow, valid.keys) AS active
    FROM agentworkflows w CROSS JOIN valid
    WHERE w.creator_id = :creator_id
)
UPDATE agentworkflows f
SET is_active = c.active, updated_at = greatest(now(), f.created_at + interval '1 microsecond')
FROM computed c
WHERE f.id = c.id AND f.is_active IS DISTINCT FROM c.active;

-- name: create_flow(flow_id, name, description, flow, alias, creator_id)^
INSERT INTO agentworkflows (id, alias, name, description, flow, creator_id, is_active, created_at, updated_at)
VALUES (:flow_id, :alias, :name, :description, :flow, :creator_id, true, now(), now())
RETURNING name, description, creator_id, is_active, updated_at, alias, id, flow, created_at;

-- name: update_flow(flow_id, creator_id, name, description, flow, alias)^
UPDATE agentworkflows
SET name = :name, description = :description, flow = :flow, alias = :alias, is_active = true,
    updated_at = greatest(now(), created_at + interval '1 microsecond')
WHERE id = :flow_id AND creator_id = :creator_id
RETURNING name, description, creator_id, is_active, updated_at, alias, id, flow, created_at;

-- name: delete_flow(flow_id, creator_id)$
DELETE FROM agentworkflows WHERE id = :flow_id AND creator_id = :creator_id RETURNING true;

-- FlowObject (rest-api #13, #14): is_active recomputed, never written back.
-- `flow_id` null lists them all.
-- name: list_flows(creator_id, flow_id, offset, limit)
WITH valid AS (
    SELECT coalesce(array_agg(k.key), '{}') AS keys
    FROM flow_member_keys k WHERE k.creator_id = :creator_id
)
SELECT w.name, w.description, w.flow, w.created_at, w.updated_at, w.id,
       flow_is_active(w.flow, valid.keys) AS is_active
FROM agentworkflows w CROSS JOIN valid
WHERE w.creator_id = :creator_id AND (:flow_id::uuid IS NULL OR w.id = :flow_id)
ORDER BY w.created_at DESC, w.id
OFFSET :offset LIMIT :limit;
