"""Real MCP, A2A-card and hanging servers on 127.0.0.1 for discovery tests; each can go down and come back.

Every helper is an async context manager yielding a handle with `.url` (what a user would register),
`.port`, `await .stop()` and `await .start()` (same port again).

    async with mcp_server(n_tools=20) as server:            # streamable HTTP at <url> = .../mcp
        tools = await list_tools(server.url, policy=UrlPolicy())
    async with mcp_server(transport="sse") as server: ...   # HTTP+SSE at .../sse
    async with card_server(card) as server: ...             # GET /.well-known/agent.json
    async with hanging_server() as server: ...              # accepts TCP, never answers
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

from aiohttp import web

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

# The card of rest-api #35's example (the A2A sample "Reimbursement Agent"), as served.
REIMBURSEMENT_CARD: dict[str, Any] = {
    "name": "Reimbursement Agent",
    "description": "Handles reimbursements.",
    "url": "http://localhost:10102/",
    "version": "1.0.0",
    "defaultInputModes": ["text", "text/plain"],
    "defaultOutputModes": ["text", "text/plain"],
    "capabilities": {"streaming": True, "pushNotifications": None},
    "skills": [{
        "id": "process_reimbursement",
        "name": "Process Reimbursement Tool",
        "description": "Helps with reimbursement.",
        "tags": ["reimbursement"],
        "examples": ["Reimburse me $20"],
        "inputModes": None,
    }],
    "provider": None,
    "documentationUrl": None,
    "protocolVersion": "0.2.5",
}


def _bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Coming back on the same port right after going down must not trip over TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    return sock


class _Restartable:
    """Start/stop bookkeeping: the first start picks a free port (or `port`), later starts reuse it."""

    path = "/"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.running = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    async def start(self) -> None:
        if not self.running:
            await self._start()
            self.running = True

    async def stop(self) -> None:
        if self.running:
            self.running = False
            await self._stop()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# ----- MCP --------------------------------------------------------------------------------------

def build_mcp(n_tools: int = 20, **options: Any) -> Any:
    """An SDK `MCPServer` with `n_tools` tools (at least 3): `test_tool(name)` as in rest-api #32,
    `noargs()` without arguments, `annotated(x)` with annotations, then `tool_3` … `tool_<n-1>`.
    `options` go to the MCPServer (e.g. `token_verifier` and `auth`)."""
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    server: Any = MCPServer("test-tools", **options)

    def test_tool(name: str) -> str:
        return name

    def noargs() -> str:
        return "ok"

    def annotated(x: int) -> int:
        return x

    server.add_tool(test_tool, description="Returns name")
    server.add_tool(noargs, description="No args")
    hints = ToolAnnotations(title="Annotated", read_only_hint=True, open_world_hint=False)
    server.add_tool(annotated, annotations=hints)
    for i in range(3, n_tools):
        server.add_tool(_numbered(i), name=f"tool_{i}", description=f"Tool number {i}")
    return server


def _numbered(i: int) -> Callable[[str], str]:
    def numbered(value: str) -> str:
        return f"{i}:{value}"
    return numbered


def _paged(definitions: Any, page_size: int) -> Any:
    """A low-level SDK server listing `definitions`' tools `page_size` at a time (cursor = offset)."""
    from mcp.server.lowlevel import Server
    from mcp_types import ListToolsResult

    async def on_list_tools(ctx: Any, params: Any) -> Any:
        tools = await definitions.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + page_size
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)

    async def on_call_tool(ctx: Any, params: Any) -> Any:
        return await definitions.call_tool(params.name, params.arguments or {})

    return Server("test-tools-paged", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


class UvicornServer(_Restartable):
    """An ASGI app served by uvicorn inside the test's event loop.

    `make_app` is called at every start: the SDK's session manager runs only once per app.
    """

    def __init__(self, make_app: Callable[[], Any], path: str, port: int = 0) -> None:
        super().__init__(port)
        self.make_app = make_app
        self.path = path
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            # Several servers start and stop out of order; none may take over the test's signals.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        sock = _bound_socket(self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.make_app(), log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self._server = Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                try:
                    await self._task
                except BaseException as exc:  # uvicorn reports a failed start with SystemExit
                    raise RuntimeError("uvicorn did not start") from exc
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)

    async def _stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


def mcp_server(n_tools: int = 20, *, transport: Literal["streamable-http", "sse"] = "streamable-http",
               page_size: int | None = None, port: int = 0) -> UvicornServer:
    """An MCP server with `n_tools` tools; `page_size` makes `tools/list` paginate (streamable HTTP only)."""
    definitions = build_mcp(n_tools)
    if transport == "sse":
        assert page_size is None, "pagination is only served over streamable HTTP"
        return UvicornServer(definitions.sse_app, "/sse", port)
    if page_size is None:
        return UvicornServer(definitions.streamable_http_app, "/mcp", port)
    return UvicornServer(_paged(definitions, page_size).streamable_http_app, "/mcp", port)


# ----- hanging ------------------------------------------------------------------------------------

class HangingServer(_Restartable):
    """Accepts TCP connections and reads forever without ever answering."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _start(self) -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                while await reader.read(65536):
                    pass
            except ConnectionError:
                pass
            finally:
                self._writers.discard(writer)
                writer.close()

        self._server = await asyncio.start_server(swallow, sock=_bound_socket(self.port))
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()


def hanging_server(port: int = 0) -> HangingServer:
    return HangingServer(port)


# ----- A2A cards ----------------------------------------------------------------------------------

class StaticTokens:
    """The SDK's TokenVerifier over a table of bearer tokens and their scopes (edit it to revoke)."""

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self.tokens = tokens

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        scopes = self.tokens.get(token)
        return None if scopes is None else AccessToken(token=token, client_id="tests", scopes=scopes)


def bearer_mcp_server(tokens: dict[str, list[str]], n_tools: int = 3, *, port: int = 0) -> UvicornServer:
    """The SDK's own bearer-token protection: no or an unknown token → 401, a token without the
    `tools` scope → 403. `tokens` (token → scopes) is read on every request."""
    from mcp.server.auth.settings import AuthSettings

    def make_app() -> Any:
        auth = AuthSettings(issuer_url="http://127.0.0.1/issuer", resource_server_url=None,
                            required_scopes=["tools"])
        return build_mcp(n_tools, token_verifier=StaticTokens(tokens), auth=auth).streamable_http_app()

    return UvicornServer(make_app, "/mcp", port)


def api_key_mcp_server(key: str, header: str = "X-API-Key", n_tools: int = 3, *, port: int = 0) -> UvicornServer:
    """An MCP server behind an API-key header check (401 without the right value)."""
    wanted = (header.lower().encode(), key.encode())

    def make_app() -> Any:
        inner = build_mcp(n_tools).streamable_http_app()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and wanted not in scope["headers"]:
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error": "invalid api key"}'})
                return
            await inner(scope, receive, send)

        return app

    return UvicornServer(make_app, "/mcp", port)


CardMode = Literal["agent.json", "agent-card.json", "500", "invalid-json", "redirect"]


class _AiohttpServer(_Restartable):
    _runner: web.AppRunner

    def make_app(self) -> web.Application:
        raise NotImplementedError

    async def _start(self) -> None:
        sock = _bound_socket(self.port)
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _stop(self) -> None:
        await self._runner.cleanup()


class CardServer(_AiohttpServer):
    """Serves `card` as an A2A agent card; `mode` (changeable while running) picks the behaviour:

    `agent.json` (only the classic path; the newer one is 404), `agent-card.json` (only the newer
    path), `500`, `invalid-json`, `redirect` (302 from both card paths to `redirect_to`; any other
    `/.well-known/` name serves the card).
    Paths requested are recorded in `requests`.
    """

    def __init__(self, card: dict[str, Any] | None = None, mode: CardMode = "agent.json", port: int = 0,
                 redirect_to: str = "") -> None:
        super().__init__(port)
        self.card: Any = copy.deepcopy(REIMBURSEMENT_CARD if card is None else card)
        self.mode = mode
        self.redirect_to = redirect_to
        self.requests: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        name = request.match_info["name"]
        if self.mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "redirect":
            if name in ("agent.json", "agent-card.json"):
                raise web.HTTPFound(self.redirect_to)
        elif name != ("agent-card.json" if self.mode == "agent-card.json" else "agent.json"):
            return web.json_response({"detail": "Not Found"}, status=404)
        if self.mode == "invalid-json":
            return web.Response(text="{'name': not json", content_type="application/json")
        return web.json_response(self.card)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/{name}", self._handle)
        return app


def card_server(card: dict[str, Any] | None = None, mode: CardMode = "agent.json", *, port: int = 0,
                redirect_to: str = "") -> CardServer:
    return CardServer(card, mode, port, redirect_to)


class RedirectServer(_AiohttpServer):
    """Answers every request with a 302 to `location` (redirects towards forbidden addresses)."""

    def __init__(self, location: str, port: int = 0) -> None:
        super().__init__(port)
        self.location = location

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.location)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app


@contextlib.asynccontextmanager
async def running(*servers: _Restartable) -> AsyncIterator[None]:
    """Start several helpers together and stop them all afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        yield
