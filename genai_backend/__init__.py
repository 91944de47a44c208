"""GenAI AgentOS back-end."""
