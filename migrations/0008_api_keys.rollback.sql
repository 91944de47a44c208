-- depends: 0006_pushes
DROP TABLE IF EXISTS api_keys;
