-- Uploaded files (rest-api #39-#43), scoped by creator. `created_at` orders listings only.

-- name: create_file(file_id, session_id, request_id, creator_id, mimetype, original_name, internal_name, from_agent)!
INSERT INTO files (id, session_id, request_id, creator_id, mimetype, original_name, internal_name, internal_id,
                   from_agent, created_at)
VALUES (:file_id, :session_id, :request_id, :creator_id, :mimetype, :original_name, :internal_name, :file_id,
        :from_agent, now());

-- name: get_file(file_id, creator_id)^
SELECT id, session_id, request_id, original_name, mimetype, internal_id, internal_name, from_agent, creator_id
FROM files WHERE id = :file_id AND creator_id = :creator_id;

-- name: list_files_by_session(creator_id, session_id)
SELECT id AS file_id, session_id, request_id
FROM files WHERE creator_id = :creator_id AND session_id = :session_id
ORDER BY created_at, id;

-- name: list_files(creator_id, offset, limit)
SELECT id, session_id, request_id, original_name, mimetype, internal_id, internal_name, from_agent, creator_id
FROM files WHERE creator_id = :creator_id
ORDER BY created_at DESC, id
OFFSET :offset LIMIT :limit;

-- name: list_file_internal_names(names)
-- Which of these names on disk have a row (the start-up sweep of orphaned uploads).
SELECT internal_name FROM files WHERE internal_name = ANY(:names::text[]);
