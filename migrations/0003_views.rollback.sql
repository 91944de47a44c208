-- depends: 0002_contract_changes
DROP VIEW IF EXISTS agent_items;
DROP VIEW IF EXISTS flow_member_keys;
