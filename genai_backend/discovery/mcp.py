"""MCP tool discovery over streamable HTTP (HTTP+SSE as a fallback) with the official SDK client."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genai_backend.discovery.guard import UrlPolicy, guarded_httpx_client

if TYPE_CHECKING:
    import httpx2
    from mcp import ClientSession

log = logging.getLogger(__name__)

# A server that pages forever (or repeats a cursor) must not keep the refresh busy.
MAX_PAGES = 100


# Servers answer these when credentials are missing, wrong or insufficient.
AUTH_STATUSES = {401: "401 Unauthorized", 403: "403 Forbidden"}


class McpUnavailable(Exception):
    """The MCP server could not be listed: unreachable, HTTP or protocol error, timeout, refused URL."""


class McpUnauthorized(McpUnavailable):
    """The server refused the request's credentials (or their absence) with 401 or 403."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the server answered {AUTH_STATUSES[status]}")
        self.status = status


@dataclass(frozen=True)
class McpTool:
    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None


async def list_tools(url: str, *, policy: UrlPolicy, timeout: float = 60,
                     headers: dict[str, str] | None = None) -> list[McpTool]:
    """`initialize` + every page of `tools/list` on `url`, all within `timeout` seconds.

    `headers` (credentials) go with every request. Streamable HTTP first; if the server answers
    the initialize POST with a 4xx, it may be an older HTTP+SSE server (the MCP spec's
    backwards-compatibility rule), so that transport is tried next, except for 401/403, which
    are about the credentials (McpUnauthorized). Every failure is raised as McpUnavailable.
    """
    import anyio  # the SDK's dependency, imported lazily with it

    statuses: list[int] = []
    try:
        with anyio.fail_after(timeout):
            try:
                return await _list_streamable(url, policy, timeout, statuses, headers or {})
            except Exception as exc:
                _raise_if_refused(statuses, exc)
                if not (statuses and 400 <= statuses[0] < 500):
                    raise
                streamable_error = _describe(exc)
            log.debug("MCP %s: streamable HTTP answered %s, trying HTTP+SSE", url, statuses[0])
            statuses.clear()
            try:
                return await _list_sse(url, policy, timeout, statuses, headers or {})
            except Exception as exc:
                _raise_if_refused(statuses, exc)
                raise McpUnavailable(f"streamable HTTP: {streamable_error}; HTTP+SSE: {_describe(exc)}") from exc
    except McpUnavailable:
        raise
    except TimeoutError as exc:
        raise McpUnavailable(f"no complete answer within {timeout:g} s") from exc
    except Exception as exc:  # the SDK raises many types (httpx, anyio groups, MCPError, pydantic)
        raise McpUnavailable(_describe(exc)) from exc


def _raise_if_refused(statuses: list[int], exc: Exception) -> None:
    refused = next((status for status in statuses if status in AUTH_STATUSES), None)
    if refused is not None:
        raise McpUnauthorized(refused) from exc


async def _list_streamable(url: str, policy: UrlPolicy, timeout: float, post_statuses: list[int],
                           headers: dict[str, str]) -> list[McpTool]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def record(response: httpx2.Response) -> None:
        if response.request.method == "POST":
            post_statuses.append(response.status_code)

    client = guarded_httpx_client(policy, headers=headers, timeout=httpx2.Timeout(timeout),
                                  event_hooks={"response": [record]})
    async with client, streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write, read_timeout_seconds=timeout) as session:
        return await _initialize_and_list(session)


async def _list_sse(url: str, policy: UrlPolicy, timeout: float, statuses: list[int],
                    headers: dict[str, str]) -> list[McpTool]:
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    def factory(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        return guarded_httpx_client(policy, headers=headers, timeout=timeout, auth=auth,
                                    event_hooks={"response": [record]})

    async with sse_client(url, headers=headers, timeout=timeout, sse_read_timeout=timeout,
                          httpx_client_factory=factory) \
            as (read, write), ClientSession(read, write, read_timeout_seconds=timeout) as session:
        return await _initialize_and_list(session)


async def _initialize_and_list(session: ClientSession) -> list[McpTool]:
    from mcp_types import PaginatedRequestParams

    await session.initialize()
    tools: list[McpTool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        params = None if cursor is None else PaginatedRequestParams(cursor=cursor)
        result = await session.list_tools(params=params)
        tools.extend(
            McpTool(
                name=tool.name,
                description=tool.description,
                input_schema=dict(tool.input_schema),
                annotations=(None if tool.annotations is None
                             else tool.annotations.model_dump(by_alias=True, mode="json", exclude_none=True)),
            )
            for tool in result.tools)
        cursor = result.next_cursor
        if cursor is None:
            return tools
        if cursor in seen:
            raise McpUnavailable(f"tools/list repeats the cursor {cursor!r}")
        seen.add(cursor)
    raise McpUnavailable(f"tools/list has more than {MAX_PAGES} pages")


def _describe(exc: BaseException) -> str:
    """A one-line reason; anyio task groups wrap the interesting error in (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def tool_schema(tool_description: str | None, input_schema: dict[str, Any], title: str) -> dict[str, Any]:
    """The `T(tool, title)` schema of rest-api #8: how an MCP tool is offered to the master agent's LLM."""
    schema: dict[str, Any] = {} if tool_description is None else {"description": tool_description}
    schema.update(input_schema)
    schema.pop("name", None)
    schema["title"] = title
    if not schema.get("properties"):
        schema["required"] = []
    return schema
