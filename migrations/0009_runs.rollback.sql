-- depends: 0008_api_keys
DROP TABLE IF EXISTS run_events;
DROP TABLE IF EXISTS runs;
