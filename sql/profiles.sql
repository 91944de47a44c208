-- name: create_profile(profile_id, user_id)!
INSERT INTO userprofiles (id, user_id) VALUES (:profile_id, :user_id);

-- name: get_profile(user_id)^
SELECT id, user_id, first_name, last_name FROM userprofiles WHERE user_id = :user_id;

-- Only the fields present in the request are written; the flags say which.
-- name: update_profile(user_id, set_first, first_name, set_last, last_name)^
UPDATE userprofiles
SET first_name = CASE WHEN :set_first THEN :first_name ELSE first_name END,
    last_name = CASE WHEN :set_last THEN :last_name ELSE last_name END
WHERE user_id = :user_id
RETURNING id, user_id, first_name, last_name;
