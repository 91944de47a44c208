-- name: create_user(user_id, username, password)^
INSERT INTO users (id, username, password)
VALUES (:user_id, :username, :password)
RETURNING id, username, created_at, updated_at;

-- name: user_exists(user_id)$
SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id);
