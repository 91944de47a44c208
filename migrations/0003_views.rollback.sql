-- depends: 0002_contract_changes
DROP VIEW IF EXISTS agent_items;
DROP FUNCTION IF EXISTS flow_is_active(json, text[]);
DROP VIEW IF EXISTS flow_member_keys;
