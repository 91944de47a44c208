-- name: create_a2a_card(card_id, name, alias, description, server_url, card_content, creator_id, endpoint_url, protocol_version, transport)^
-- A second registration of one origin by one user conflicts; the caller re-activates the existing row.
INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active, creator_id,
                      endpoint_url, protocol_version, transport)
VALUES (:card_id, :name, :alias, :description, :server_url, :card_content, true, :creator_id,
        :endpoint_url, :protocol_version, :transport)
ON CONFLICT ON CONSTRAINT uq_a2a_card_server_url DO NOTHING
RETURNING id, name, alias, description, server_url, card_content, created_at, updated_at,
          endpoint_url, protocol_version, transport;

-- name: activate_a2a_card_by_url(creator_id, server_url)^
-- `updated_at` moves only when the flag really changes.
WITH target AS (
    SELECT id, name, alias, description, server_url, card_content, created_at, updated_at, is_active,
           endpoint_url, protocol_version, transport
    FROM a2acards
    WHERE creator_id = :creator_id AND server_url = :server_url
    FOR UPDATE
), activated AS (
    UPDATE a2acards c SET is_active = true, updated_at = now()
    FROM target t
    WHERE c.id = t.id AND NOT t.is_active
    RETURNING c.id, c.updated_at
)
SELECT t.id, t.name, t.alias, t.description, t.server_url, t.card_content, t.created_at,
       coalesce(a.updated_at, t.updated_at) AS updated_at, t.endpoint_url, t.protocol_version, t.transport,
       a.id IS NOT NULL AS reactivated
FROM target t LEFT JOIN activated a ON a.id = t.id;

-- name: get_a2a_card(card_id, creator_id)^
SELECT id, name, alias, description, server_url, card_content, is_active, created_at, updated_at, creator_id,
       endpoint_url, protocol_version, transport
FROM a2acards
WHERE id = :card_id AND creator_id = :creator_id;

-- name: list_a2a_cards(creator_id)
-- The reference pages with a fixed offset 0 / limit 100 (rest-api #36).
SELECT id, name, alias, description, server_url, card_content, is_active, created_at, updated_at, creator_id,
       endpoint_url, protocol_version, transport
FROM a2acards
WHERE creator_id = :creator_id
ORDER BY created_at DESC, id
LIMIT 100;

-- name: delete_a2a_card(card_id, creator_id)$
DELETE FROM a2acards WHERE id = :card_id AND creator_id = :creator_id RETURNING id;

-- name: list_a2a_card_urls()
SELECT DISTINCT server_url FROM a2acards ORDER BY server_url;

-- name: refresh_a2a_cards_by_url(server_url, description, card_content, endpoint_url, protocol_version, transport)
-- Every row of the origin gets the card in its registration shape (D18); rows already equal are
-- left alone, so their `updated_at` stays. Name and alias never change (the alias is the tool name).
UPDATE a2acards
SET description = :description, card_content = :card_content, is_active = true, updated_at = now(),
    endpoint_url = :endpoint_url, protocol_version = :protocol_version, transport = :transport
WHERE server_url = :server_url
  AND (NOT is_active OR description IS DISTINCT FROM :description
       OR card_content::jsonb IS DISTINCT FROM (:card_content::json)::jsonb
       OR endpoint_url IS DISTINCT FROM :endpoint_url OR protocol_version IS DISTINCT FROM :protocol_version
       OR transport IS DISTINCT FROM :transport)
RETURNING id, creator_id;

-- name: deactivate_a2a_cards_by_url(server_url)
UPDATE a2acards SET is_active = false, updated_at = now()
WHERE server_url = :server_url AND is_active
RETURNING id, creator_id;
