-- depends: 0007_tool_credentials_and_cards
DROP TABLE IF EXISTS api_keys;
