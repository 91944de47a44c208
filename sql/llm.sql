-- Model providers and model configs (rest-api #18-#25), always scoped by creator.
-- A config is emitted as ModelConfigDTO; an empty stored system prompt shows the default one.

-- name: create_provider(provider_id, name, api_key, metadata, creator_id)^
INSERT INTO modelproviders (id, name, api_key, provider_metadata, creator_id, created_at, updated_at)
VALUES (:provider_id, :name, :api_key, :metadata, :creator_id, now(), now())
RETURNING id, api_key, name AS provider, provider_metadata AS metadata, created_at, updated_at;

-- name: get_provider_by_name(creator_id, name)^
SELECT id, name, api_key FROM modelproviders WHERE creator_id = :creator_id AND name = :name;

-- name: update_provider(provider_id, creator_id, api_key, metadata)^
UPDATE modelproviders
SET api_key = :api_key, provider_metadata = :metadata, updated_at = now()
WHERE id = :provider_id AND creator_id = :creator_id
RETURNING id, api_key, name AS provider, provider_metadata AS metadata, created_at, updated_at;

-- The provider is named by the caller; no row is inserted when the caller has no such provider.
-- name: create_config(config_id, creator_id, provider, name, model, system_prompt, temperature, credentials, user_prompt, max_last_messages)^
INSERT INTO modelconfigs (id, name, model, provider_id, system_prompt, user_prompt, max_last_messages,
                          temperature, credentials, creator_id, created_at, updated_at)
SELECT :config_id, :name, :model, p.id, :system_prompt, :user_prompt, :max_last_messages,
       :temperature, :credentials, :creator_id, now(), now()
FROM modelproviders p
WHERE p.creator_id = :creator_id AND p.name = :provider
RETURNING provider_id;

-- Configs newest first: the answer of POST /api/llm/model/config.
-- name: get_provider_with_configs(creator_id, provider_id, default_prompt)^
SELECT p.api_key, p.name AS provider, p.provider_metadata AS metadata,
       coalesce((SELECT json_agg(json_build_object(
                    'id', c.id, 'name', c.name, 'model', c.model,
                    'system_prompt', coalesce(nullif(c.system_prompt, ''), :default_prompt),
                    'temperature', c.temperature, 'credentials', c.credentials,
                    'user_prompt', c.user_prompt, 'max_last_messages', c.max_last_messages)
                    ORDER BY c.created_at DESC, c.id)
                 FROM modelconfigs c
                 WHERE c.provider_id = p.id AND c.creator_id = :creator_id), '[]'::json) AS configs
FROM modelproviders p
WHERE p.id = :provider_id AND p.creator_id = :creator_id;

-- Providers newest first, each with all its configs oldest first; the page applies to providers.
-- name: list_providers_with_configs(creator_id, offset, limit, default_prompt)
SELECT p.api_key, p.name AS provider, p.provider_metadata AS metadata,
       coalesce((SELECT json_agg(json_build_object(
                    'id', c.id, 'name', c.name, 'model', c.model,
                    'system_prompt', coalesce(nullif(c.system_prompt, ''), :default_prompt),
                    'temperature', c.temperature, 'credentials', c.credentials,
                    'user_prompt', c.user_prompt, 'max_last_messages', c.max_last_messages)
                    ORDER BY c.created_at, c.id)
                 FROM modelconfigs c
                 WHERE c.provider_id = p.id AND c.creator_id = :creator_id), '[]'::json) AS configs
FROM modelproviders p
WHERE p.creator_id = :creator_id
ORDER BY p.created_at DESC, p.id
OFFSET :offset LIMIT :limit;

-- name: get_config_with_provider(creator_id, config_id, default_prompt)^
SELECT p.api_key, p.name AS provider, p.provider_metadata AS metadata,
       json_build_array(json_build_object(
           'id', c.id, 'name', c.name, 'model', c.model,
           'system_prompt', coalesce(nullif(c.system_prompt, ''), :default_prompt),
           'temperature', c.temperature, 'credentials', c.credentials,
           'user_prompt', c.user_prompt, 'max_last_messages', c.max_last_messages)) AS configs
FROM modelconfigs c
JOIN modelproviders p ON p.id = c.provider_id
WHERE c.id = :config_id AND c.creator_id = :creator_id;

-- Partial update: each `set_<field>` says whether the body carried that field.
-- name: update_config(creator_id, config_id, set_name, name, set_model, model, set_system_prompt, system_prompt, set_temperature, temperature, set_credentials, credentials, set_user_prompt, user_prompt, set_max_last_messages, max_last_messages, default_prompt)^
UPDATE modelconfigs
SET name = CASE WHEN :set_name::boolean THEN :name ELSE name END,
    model = CASE WHEN :set_model::boolean THEN :model ELSE model END,
    system_prompt = CASE WHEN :set_system_prompt::boolean THEN :system_prompt ELSE system_prompt END,
    temperature = CASE WHEN :set_temperature::boolean THEN :temperature ELSE temperature END,
    credentials = CASE WHEN :set_credentials::boolean THEN :credentials::json ELSE credentials END,
    user_prompt = CASE WHEN :set_user_prompt::boolean THEN :user_prompt ELSE user_prompt END,
    max_last_messages = CASE WHEN :set_max_last_messages::boolean THEN :max_last_messages
                             ELSE max_last_messages END,
    updated_at = now()
WHERE id = :config_id AND creator_id = :creator_id
RETURNING id, name, model, coalesce(nullif(system_prompt, ''), :default_prompt) AS system_prompt,
          temperature, credentials, user_prompt, max_last_messages;

-- name: delete_config(creator_id, config_id)^
DELETE FROM modelconfigs WHERE id = :config_id AND creator_id = :creator_id RETURNING id;
