-- name: create_mcp_server(server_id, server_url, creator_id, headers, header_names, secret_key_id)$
-- A second registration of one URL by one user conflicts; the caller re-activates the existing row.
INSERT INTO mcpservers (id, server_url, creator_id, is_active, headers, header_names, secret_key_id)
VALUES (:server_id, :server_url, :creator_id, true, :headers, :header_names, :secret_key_id)
ON CONFLICT ON CONSTRAINT uq_mcp_server_url DO NOTHING
RETURNING id;

-- name: activate_mcp_server_by_url(creator_id, server_url)^
-- `updated_at` moves only when the flag really changes.
WITH target AS (
    SELECT id, is_active FROM mcpservers
    WHERE creator_id = :creator_id AND server_url = :server_url
    FOR UPDATE
), activated AS (
    UPDATE mcpservers s SET is_active = true, unavailable_reason = NULL, updated_at = now()
    FROM target t
    WHERE s.id = t.id AND NOT t.is_active
    RETURNING s.id
)
SELECT t.id, EXISTS (SELECT 1 FROM activated) AS reactivated FROM target t;

-- name: sync_mcp_tools(server_id, tools)$
-- Upsert a server's tools by name from `tools` (a JSON list of {id, name, description,
-- input_schema, annotations, alias}; id and alias are used only for new names), delete the names
-- no longer listed, and touch only rows whose data changed. Returns how many rows changed.
WITH incoming AS (
    SELECT i.id, i.name, i.description, i.input_schema, i.annotations, i.alias
    FROM json_to_recordset(:tools::json)
         AS i(id uuid, name text, description text, input_schema json, annotations json, alias text)
), updated AS (
    UPDATE mcptools t
    SET description = i.description, "inputSchema" = i.input_schema, annotations = i.annotations,
        updated_at = now()
    FROM incoming i
    WHERE t.mcp_server_id = :server_id AND t.name = i.name
      AND (t.description IS DISTINCT FROM i.description
           OR t."inputSchema"::jsonb IS DISTINCT FROM i.input_schema::jsonb
           OR t.annotations::jsonb IS DISTINCT FROM i.annotations::jsonb)
    RETURNING t.id
), inserted AS (
    INSERT INTO mcptools (id, name, description, "inputSchema", annotations, alias, mcp_server_id)
    SELECT i.id, i.name, i.description, i.input_schema, i.annotations, i.alias, :server_id
    FROM incoming i
    WHERE NOT EXISTS (SELECT 1 FROM mcptools t WHERE t.mcp_server_id = :server_id AND t.name = i.name)
    RETURNING id
), deleted AS (
    DELETE FROM mcptools t
    WHERE t.mcp_server_id = :server_id AND t.name NOT IN (SELECT name FROM incoming)
    RETURNING t.id
)
SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted) + (SELECT count(*) FROM deleted);

-- name: get_mcp_server(server_id, creator_id)^
SELECT id, name, description, server_url, created_at, updated_at, creator_id, is_active, header_names,
       unavailable_reason
FROM mcpservers
WHERE id = :server_id AND creator_id = :creator_id;

-- name: get_mcp_server_for_update(server_id, creator_id)^
SELECT id, server_url, is_active FROM mcpservers WHERE id = :server_id AND creator_id = :creator_id FOR UPDATE;

-- name: set_mcp_server_headers(server_id, headers, header_names, secret_key_id)!
-- After a successful lookup with these headers, so the server is up.
UPDATE mcpservers
SET headers = :headers, header_names = :header_names, secret_key_id = :secret_key_id, is_active = true,
    unavailable_reason = NULL, updated_at = now()
WHERE id = :server_id;

-- name: list_mcp_servers(creator_id, offset, limit)
SELECT id, name, description, server_url, created_at, updated_at, creator_id, is_active, header_names,
       unavailable_reason
FROM mcpservers
WHERE creator_id = :creator_id AND is_active
ORDER BY created_at, id
OFFSET :offset LIMIT :limit;

-- name: list_mcp_tools_by_servers(server_ids)
-- Tool ids are handed out in ascending order at insertion, so this is the server's own order.
SELECT id, name, description, "inputSchema", annotations, alias, mcp_server_id, created_at, updated_at
FROM mcptools
WHERE mcp_server_id = ANY(:server_ids::uuid[])
ORDER BY created_at, id;

-- name: delete_mcp_server(server_id, creator_id)$
-- Tools go with it (ON DELETE CASCADE, D19).
DELETE FROM mcpservers WHERE id = :server_id AND creator_id = :creator_id RETURNING id;

-- name: list_mcp_server_urls()
-- One lookup per URL and set of stored headers (null: none); servers with headers are looked up
-- with their own, even when they share the URL.
SELECT DISTINCT server_url, headers FROM mcpservers ORDER BY server_url, headers;

-- name: lock_mcp_servers_by_url(server_url, headers)
-- Locked for the refresh transaction, so a server deleted meanwhile cannot get orphan tools. Rows
-- whose headers changed since the lookup (PATCH, rotation) no longer match and wait for the next.
SELECT id, creator_id FROM mcpservers
WHERE server_url = :server_url AND headers IS NOT DISTINCT FROM :headers
ORDER BY id FOR UPDATE;

-- name: set_mcp_servers_active_by_url(server_url, headers, is_active, reason)
-- `updated_at` moves only when the flag flips: a changing reason alone is not an edit.
WITH changed AS (
    SELECT id, is_active <> :is_active AS flipped FROM mcpservers
    WHERE server_url = :server_url AND headers IS NOT DISTINCT FROM :headers
      AND (is_active <> :is_active OR unavailable_reason IS DISTINCT FROM :reason)
    FOR UPDATE
)
UPDATE mcpservers s
SET is_active = :is_active, unavailable_reason = :reason,
    updated_at = CASE WHEN c.flipped THEN now() ELSE s.updated_at END
FROM changed c
WHERE s.id = c.id
RETURNING s.id, s.creator_id, c.flipped;

-- name: get_mcp_server_headers_by_url(creator_id, server_url)$
SELECT headers FROM mcpservers WHERE creator_id = :creator_id AND server_url = :server_url;
