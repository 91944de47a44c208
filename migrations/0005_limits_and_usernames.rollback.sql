-- depends: 0004_catalogue_changes
DROP TABLE IF EXISTS login_attempts;
DROP FUNCTION IF EXISTS take_socket_slot(uuid, uuid, uuid, integer, double precision);
DROP TABLE IF EXISTS socket_slots;
DROP TRIGGER IF EXISTS users_username_key ON users;
DROP FUNCTION IF EXISTS note_username_key();
DROP TABLE IF EXISTS username_keys;
