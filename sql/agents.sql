-- name: mark_all_agents_inactive()!
UPDATE agents SET is_active = false WHERE is_active;

-- name: agent_belongs_to(agent_id, creator_id)$
SELECT EXISTS (SELECT 1 FROM agents WHERE id = :agent_id AND creator_id = :creator_id);
