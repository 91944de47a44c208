"""The discovery client shared by the registration endpoints and the refresh job (one per app)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from genai_backend.config import SETTINGS, Settings
from genai_backend.discovery.a2a import CardUnavailable, fetch_card
from genai_backend.discovery.guard import UrlPolicy, check_url, find_refusal, guarded_connector
from genai_backend.discovery.mcp import McpTool, McpUnavailable, list_tools
from genai_backend.limits import unstorable
from genai_backend.observability.calls import discovery_call

# A card is one small document; MCP servers get the spec's 60 s at registration (rest-api #31).
CARD_TIMEOUT = 10.0
MCP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Discovery:
    """Where discovery may go (`policy`) and the guarded aiohttp session A2A cards are fetched with.

    MCP lookups use the SDK's own (httpx) client, built per lookup behind the same policy.
    """

    policy: UrlPolicy
    session: aiohttp.ClientSession

    async def vet(self, url: str) -> None:
        """Raise UrlRefused early, with a clear reason, when `url`'s host resolves somewhere forbidden."""
        await check_url(url, self.policy)

    async def tools(self, url: str, timeout: float = MCP_TIMEOUT,
                    headers: dict[str, str] | None = None) -> list[McpTool]:
        with discovery_call("mcp", url):
            tools = await list_tools(url, policy=self.policy, timeout=timeout, headers=headers)
        # Registration and refresh both come through here: what PostgreSQL cannot hold is an
        # invalid answer, refused before anything is stored.
        for tool in tools:
            for part in (tool.name, tool.description, tool.input_schema, tool.annotations):
                problem = unstorable(part)
                if problem is not None:
                    raise McpUnavailable(f"the tools of {url} cannot be stored: {problem}")
        return tools

    async def card(self, url: str, timeout: float = CARD_TIMEOUT) -> dict[str, Any]:
        with discovery_call("a2a", url):
            card = await fetch_card(url, session=self.session, timeout=timeout)
        problem = unstorable(card)
        if problem is not None:
            raise CardUnavailable(f"the agent card of {url} cannot be stored: {problem}")
        return card

    async def close(self) -> None:
        await self.session.close()


def open_discovery(settings: Settings) -> Discovery:
    """A Discovery for `settings`; call within a running loop, close it with `close()`."""
    policy = UrlPolicy(allow_private=settings.urls_allow_private, allow_hosts=settings.urls_allow_hosts)
    # ssl=False only when A2A_VERIFY_TLS=false (self-signed lab setups); True is aiohttp's verifying default.
    connector = guarded_connector(policy, ssl=settings.a2a_verify_tls)
    # No environment proxies: through a proxy the guard would vet the proxy, not the destination.
    return Discovery(policy, aiohttp.ClientSession(connector=connector, trust_env=False))


def refusal_detail(url: str, exc: BaseException) -> str | None:
    """The 400 text for a request the URL policy refused (also after a redirect), or None."""
    refusal = find_refusal(exc)
    if refusal is None:
        return None
    return f"Refused to contact {url}: {refusal.reason}"


DISCOVERY = web.AppKey("discovery", Discovery)


async def discovery_ctx(app: web.Application) -> AsyncIterator[None]:
    discovery = open_discovery(app[SETTINGS])
    app[DISCOVERY] = discovery
    try:
        yield
    finally:
        await discovery.close()
