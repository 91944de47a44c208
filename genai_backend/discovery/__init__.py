"""Network side of MCP and A2A discovery, behind an SSRF guard (no database, no HTTP endpoints)."""
from genai_backend.discovery.a2a import CardUnavailable, a2a_schema, fetch_card
from genai_backend.discovery.guard import (
    UrlPolicy,
    UrlRefused,
    check_url,
    find_refusal,
    guarded_connector,
    guarded_httpx_client,
)
from genai_backend.discovery.mcp import McpTool, McpUnavailable, list_tools, tool_schema
from genai_backend.discovery.urls import UrlError, normalise_url, origin

__all__ = [
    "CardUnavailable", "McpTool", "McpUnavailable", "UrlError", "UrlPolicy", "UrlRefused", "a2a_schema",
    "check_url", "find_refusal", "fetch_card", "guarded_connector", "guarded_httpx_client", "list_tools",
    "normalise_url", "origin", "tool_schema",
]
