-- The reference schema (Alembic 046a06a0b0a4 + 8403bb364491), written to be re-runnable.
--
-- Every statement is idempotent: the black-box tests empty every public table, yoyo's
-- bookkeeping included, so this file runs again over a complete schema (data-model.md §3),
-- and it also runs over a database created by the reference (§4). Because CREATE TABLE
-- IF NOT EXISTS skips an existing table wholesale, constraints declared inline are only
-- ever created together with their table. Primary keys, foreign keys and serial sequences
-- keep PostgreSQL's default names, which are the names the reference has.

DO $$
BEGIN
    CREATE TYPE sendertype AS ENUM ('user', 'master_agent');
EXCEPTION
    WHEN duplicate_object THEN NULL;
END
$$;

CREATE TABLE IF NOT EXISTS users (
    id uuid NOT NULL PRIMARY KEY,
    username character varying NOT NULL,
    password character varying NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_users_id ON users (id);
CREATE UNIQUE INDEX IF NOT EXISTS ix_users_username ON users (username);

CREATE TABLE IF NOT EXISTS userprofiles (
    id uuid NOT NULL PRIMARY KEY,
    first_name character varying,
    last_name character varying,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_userprofiles_user_id ON userprofiles (user_id);

CREATE TABLE IF NOT EXISTS agents (
    id uuid NOT NULL PRIMARY KEY,
    alias character varying NOT NULL,
    name character varying NOT NULL,
    description character varying NOT NULL,
    jwt character varying NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    input_parameters json NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    last_invoked_at timestamp without time zone NOT NULL DEFAULT now(),
    is_active boolean NOT NULL,
    CONSTRAINT agents_alias_key UNIQUE (alias),
    CONSTRAINT agents_jwt_key UNIQUE (jwt)
);
CREATE INDEX IF NOT EXISTS ix_agents_creator_id ON agents (creator_id);

CREATE TABLE IF NOT EXISTS agentworkflows (
    id uuid NOT NULL PRIMARY KEY,
    alias character varying NOT NULL,
    name character varying NOT NULL,
    description character varying NOT NULL,
    flow json NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    is_active boolean NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT agentworkflows_alias_key UNIQUE (alias)
);
CREATE INDEX IF NOT EXISTS ix_agentworkflows_creator_id ON agentworkflows (creator_id);

CREATE TABLE IF NOT EXISTS logs (
    id serial NOT NULL PRIMARY KEY,
    session_id uuid NOT NULL,
    request_id uuid NOT NULL,
    agent_id character varying,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    message character varying NOT NULL,
    log_level character varying NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_logs_session_id ON logs (session_id);
CREATE INDEX IF NOT EXISTS ix_logs_request_id ON logs (request_id);
CREATE INDEX IF NOT EXISTS ix_logs_agent_id ON logs (agent_id);
CREATE INDEX IF NOT EXISTS ix_logs_creator_id ON logs (creator_id);

CREATE TABLE IF NOT EXISTS files (
    id uuid NOT NULL PRIMARY KEY,
    session_id uuid,
    request_id uuid,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    mimetype character varying NOT NULL,
    original_name character varying NOT NULL,
    internal_name character varying NOT NULL,
    internal_id uuid NOT NULL,
    from_agent boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_files_session_id ON files (session_id);
CREATE INDEX IF NOT EXISTS ix_files_request_id ON files (request_id);
CREATE INDEX IF NOT EXISTS ix_files_creator_id ON files (creator_id);
CREATE INDEX IF NOT EXISTS ix_files_internal_id ON files (internal_id);

CREATE TABLE IF NOT EXISTS modelproviders (
    id uuid NOT NULL PRIMARY KEY,
    name character varying NOT NULL,
    api_key character varying,
    provider_metadata json NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT uq_user_item_name UNIQUE (creator_id, name)
);
CREATE INDEX IF NOT EXISTS ix_modelproviders_creator_id ON modelproviders (creator_id);

-- The global modelconfigs_name_key is the reference's; 0002_contract_changes replaces it.
CREATE TABLE IF NOT EXISTS modelconfigs (
    id uuid NOT NULL PRIMARY KEY,
    name character varying NOT NULL,
    model character varying NOT NULL,
    provider_id uuid REFERENCES modelproviders (id) ON DELETE CASCADE,
    system_prompt character varying NOT NULL,
    user_prompt character varying,
    max_last_messages integer NOT NULL,
    temperature double precision NOT NULL,
    credentials json NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT modelconfigs_name_key UNIQUE (name)
);
CREATE INDEX IF NOT EXISTS ix_modelconfigs_model ON modelconfigs (model);
CREATE INDEX IF NOT EXISTS ix_modelconfigs_provider_id ON modelconfigs (provider_id);
CREATE INDEX IF NOT EXISTS ix_modelconfigs_creator_id ON modelconfigs (creator_id);

CREATE TABLE IF NOT EXISTS chatconversations (
    session_id uuid NOT NULL PRIMARY KEY,
    title character varying NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_chatconversations_creator_id ON chatconversations (creator_id);

CREATE TABLE IF NOT EXISTS chatmessages (
    id uuid NOT NULL PRIMARY KEY,
    request_id uuid,
    sender_type sendertype NOT NULL,
    content character varying NOT NULL,
    extra_metadata json,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    conversation_id uuid REFERENCES chatconversations (session_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_chatmessages_conversation_id ON chatmessages (conversation_id);

CREATE TABLE IF NOT EXISTS mcpservers (
    id uuid NOT NULL PRIMARY KEY,
    name character varying,
    description character varying,
    server_url character varying NOT NULL,
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    is_active boolean NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT uq_mcp_server_url UNIQUE (creator_id, server_url)
);
CREATE INDEX IF NOT EXISTS ix_mcpservers_creator_id ON mcpservers (creator_id);

CREATE TABLE IF NOT EXISTS mcptools (
    id uuid NOT NULL PRIMARY KEY,
    name character varying NOT NULL,
    description character varying,
    "inputSchema" json NOT NULL,
    annotations json,
    alias character varying,
    mcp_server_id uuid REFERENCES mcpservers (id) ON DELETE CASCADE,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_mcptools_mcp_server_id ON mcptools (mcp_server_id);

CREATE TABLE IF NOT EXISTS a2acards (
    id uuid NOT NULL PRIMARY KEY,
    name character varying,
    alias character varying,
    description character varying,
    server_url character varying NOT NULL,
    card_content json NOT NULL,
    is_active boolean NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    creator_id uuid REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_a2a_card_server_url UNIQUE (creator_id, server_url)
);
CREATE INDEX IF NOT EXISTS ix_a2acards_creator_id ON a2acards (creator_id);

-- Tables the reference creates but never reads (data-model.md §2); kept for compatibility.
CREATE TABLE IF NOT EXISTS projects (
    id uuid NOT NULL PRIMARY KEY,
    name character varying NOT NULL
);

CREATE TABLE IF NOT EXISTS user_project_associations (
    id serial NOT NULL PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_user_project_associations_user_id ON user_project_associations (user_id);
CREATE INDEX IF NOT EXISTS ix_user_project_associations_project_id ON user_project_associations (project_id);

CREATE TABLE IF NOT EXISTS teams (
    id uuid NOT NULL PRIMARY KEY,
    name character varying NOT NULL,
    CONSTRAINT teams_name_key UNIQUE (name)
);

CREATE TABLE IF NOT EXISTS user_team_associations (
    id serial NOT NULL PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_user_team_associations_user_id ON user_team_associations (user_id);
CREATE INDEX IF NOT EXISTS ix_user_team_associations_team_id ON user_team_associations (team_id);

-- The spec lists no index on these two. They get one anyway so that deleting agents and flows
-- never scans them, and a taken-over database simply gains them.
CREATE TABLE IF NOT EXISTS agent_project_associations (
    id serial NOT NULL PRIMARY KEY,
    agent_id uuid REFERENCES agents (id) ON DELETE CASCADE,
    project_id uuid REFERENCES projects (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_agent_project_associations_agent_id ON agent_project_associations (agent_id);
CREATE INDEX IF NOT EXISTS ix_agent_project_associations_project_id ON agent_project_associations (project_id);

CREATE TABLE IF NOT EXISTS agentflow_project_associations (
    id serial NOT NULL PRIMARY KEY,
    flow_id uuid REFERENCES agentworkflows (id) ON DELETE CASCADE,
    project_id uuid REFERENCES projects (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ix_agentflow_project_associations_flow_id ON agentflow_project_associations (flow_id);
CREATE INDEX IF NOT EXISTS ix_agentflow_project_associations_project_id ON agentflow_project_associations (project_id);
