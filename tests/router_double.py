"""An in-process double of the GenAI router that follows agent-bus.md §1–§2 to the letter."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

DEFAULT_BE_KEY = "7a3fd399-3e48-46a0-ab7c-0eaf38020283::master_server_be"
DEFAULT_ML_KEY = "e1adc3d8-fca1-40b2-b90a-7b48290f2d6a::master_server_ml"
MASTER_SERVER_BE = "master_server_be"
MASTER_SERVER_ML = "master_server_ml"

Frame = dict[str, Any]


def _error(message: str, error_type: str) -> Frame:
    return {"error": {"error_message": message, "error_type": error_type}}


@dataclass(frozen=True)
class Sent:
    """One frame the router tried to send; `delivered` is False when the target was not connected."""

    sender: str
    target: str | None
    frame: Frame
    delivered: bool


class RouterDouble:
    """Router state (client id → socket) and its routing rules; serve it with `make_app()`.

    `clients` is the live id map. Every frame the router sends is recorded in `sent` (see
    `frames_to` / `wait_for_frame`), every text frame it receives in `received`.

    The reference router deletes the id of *any* closing socket, even when a newer connection with
    the same id replaced it (agent-bus.md §1 caveat). That is reproduced only with
    `stale_close_unregisters=True`; by default a replaced socket closes silently.
    """

    def __init__(
        self,
        master_be_api_key: str = DEFAULT_BE_KEY,
        master_agent_api_key: str = DEFAULT_ML_KEY,
        *,
        stale_close_unregisters: bool = False,
    ) -> None:
        self.master_be_api_key = master_be_api_key
        self.master_agent_api_key = master_agent_api_key
        self.stale_close_unregisters = stale_close_unregisters
        self.clients: dict[str, web.WebSocketResponse] = {}
        self.sent: list[Sent] = []
        self.received: list[tuple[str, str]] = []
        self.connections = 0  # accepted sockets with a client id, ever
        # Open sockets per client id now, and the most there ever were at once (a replaced
        # socket still counts until it closes): `max_open[MASTER_SERVER_BE] > 1` means two
        # back-end processes held the router session at the same time.
        self.open: dict[str, int] = {}
        self.max_open: dict[str, int] = {}
        self._sockets: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}
        self._dropped: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Event()

    # ---- serving -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.ws_view)
        # on_shutdown runs after the listening socket is closed, so nobody can slip in between
        # closing the sockets and stopping the server.
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    def client_id_for(self, headers: Any) -> str | None:
        """Derive the client id from handshake headers (agent-bus.md §1; names case-insensitive)."""
        api_key = headers.get("api-key")
        if api_key == self.master_be_api_key:
            return MASTER_SERVER_BE
        if api_key == self.master_agent_api_key:
            return MASTER_SERVER_ML
        token = headers.get("x-custom-authorization")
        if token:
            try:
                claims = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError:
                return str(token)
            # A decodable token without `sub` is not covered by the spec; the raw value is the
            # least surprising id.
            sub = claims.get("sub") if isinstance(claims, dict) else None
            return str(sub) if sub else str(token)
        invoke_key = headers.get("x-custom-invoke-key")
        if invoke_key:
            return str(invoke_key)
        return None

    async def ws_view(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client_id = self.client_id_for(request.headers)
        if client_id is None:
            await ws.close(code=4000, message=b"Missing Authorization header")
            return ws
        token = request.headers.get("x-custom-authorization")
        self._sockets[ws] = request.transport
        self.clients[client_id] = ws
        self.connections += 1
        self.open[client_id] = self.open.get(client_id, 0) + 1
        self.max_open[client_id] = max(self.max_open.get(client_id, 0), self.open[client_id])
        self._notify()
        try:
            async for msg in ws:
                # The reference reads text frames only; binary frames are ignored here.
                if msg.type is WSMsgType.TEXT:
                    self.received.append((client_id, msg.data))
                    self._notify()
                    try:
                        await self.process_message(client_id, token, msg.data)
                    except Exception:
                        log.exception("router double failed on a frame from %s", client_id)
                        await self._send(
                            client_id,
                            client_id,
                            _error(f"Unexpected exception: {msg.data}", "AgentGeneralError"),
                        )
        finally:
            self._sockets.pop(ws, None)
            self.open[client_id] -= 1
            await self.disconnect(client_id, ws)
        return ws

    # ---- routing (agent-bus.md §2) ---------------------------------------------------------

    async def process_message(self, client_id: str, token: str | None, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            await self._send(
                client_id, client_id, _error("Invalid JSON format", "InvalidJSONRequestFormat")
            )
            return
        if not isinstance(frame, dict):
            # Valid JSON that is no object has no message type: "anything else".
            await self._unexpected(client_id, raw)
            return
        message_type = frame.pop("message_type", None)
        target = frame.pop("agent_uuid", None)
        payload = frame.get("request_payload")

        if message_type == "agent_register":
            if client_id not in (MASTER_SERVER_BE, MASTER_SERVER_ML):
                body = dict(payload) if isinstance(payload, dict) else {}
                body.update(agent_uuid=client_id, agent_jwt=token, message_type="agent_register")
                await self._send(client_id, MASTER_SERVER_BE, {"request_payload": body})
        elif message_type in ("agent_response", "agent_error"):
            invoked_by = frame.pop("invoked_by", None)
            frame["message_type"] = message_type
            await self._send(client_id, invoked_by, frame)
        elif message_type == "agent_invoke":
            await self._invoke(client_id, target, payload, frame)
        elif message_type == "agent_log":
            body = {"message_type": "agent_log", "agent_uuid": client_id, **frame}
            await self._send(client_id, MASTER_SERVER_BE, {"request_payload": body})
        else:
            await self._unexpected(client_id, raw)

    async def _invoke(self, client_id: str, target: Any, payload: Any, frame: Frame) -> None:
        # Rules 1 and 2 send their error and fall through, exactly like the reference.
        if not payload and not target:
            await self._send(
                client_id,
                client_id,
                _error("Missing request payload or agent UUID", "NoRequestPayload"),
            )
        if not self._is_connected(target):
            await self._send(
                client_id,
                client_id,
                {"message_type": "agent_error", **_error("Agent is NOT active", "AgentNotActive")},
            )
        from_backend = client_id.startswith(self.master_be_api_key)
        if target == MASTER_SERVER_ML and not from_backend:
            await self._send(client_id, client_id, _error("Agent is NOT active", "AgentNotActive"))
            return
        if from_backend and isinstance(payload, dict) and "error_message" in payload:
            await self._send(
                client_id, target, {"error": {**payload, "message_type": "agent_error"}}
            )
            return
        frame["invoked_by"] = client_id
        await self._send(client_id, target, frame)

    async def _unexpected(self, client_id: str, raw: str) -> None:
        await self._send(
            client_id, client_id, _error(f"Unexpected exception: {raw}", "AgentGeneralError")
        )

    async def disconnect(self, client_id: str, ws: web.WebSocketResponse) -> None:
        """The router's clean-up for a closed socket (agent-bus.md §2, "On disconnect")."""
        replaced = self.clients.get(client_id) is not ws
        if ws in self._dropped:
            # Router shut down: a dead router routes nothing.
            self._dropped.discard(ws)
            if not replaced:
                del self.clients[client_id]
            self._notify()
            return
        if replaced and not self.stale_close_unregisters:
            self._notify()
            return
        self.clients.pop(client_id, None)
        self._notify()
        if not client_id.startswith(self.master_be_api_key):
            await self._send(
                client_id,
                MASTER_SERVER_BE,
                {"request_payload": {"agent_uuid": client_id, "message_type": "agent_unregister"}},
            )
        notice = {
            "message_type": "agent_error",
            "error": {"error_message": "Agent has been unregistered", "agent_uuid": client_id},
        }
        for other_id in list(self.clients):
            if client_id in other_id:
                await self._send(client_id, other_id, notice)

    def _is_connected(self, client_id: Any) -> bool:
        return isinstance(client_id, str) and client_id in self.clients

    async def _send(self, sender: str, target: Any, frame: Frame) -> None:
        # Sends to ids that are not connected are dropped silently (rule 4).
        ws = self.clients.get(target) if isinstance(target, str) else None
        delivered = False
        if ws is not None and not ws.closed:
            try:
                await ws.send_str(json.dumps(frame))
                delivered = True
            except (ConnectionError, RuntimeError):
                log.debug("router double: %s went away while sending", target)
        self.sent.append(Sent(sender, target if isinstance(target, str) else None, frame, delivered))
        self._notify()

    # ---- control and assertions ------------------------------------------------------------

    async def close_all(
        self, code: int = 1012, message: bytes = b"router restart", *, abrupt: bool = False
    ) -> None:
        """Close every socket without routing anything (a crashed or restarting router).

        `abrupt=True` drops the TCP connections without a close frame (clients see 1006).
        """
        sockets = list(self._sockets.items())
        self._dropped.update(ws for ws, _ in sockets)
        if abrupt:
            for _, transport in sockets:
                if transport is not None:
                    transport.abort()  # type: ignore[attr-defined]
        else:
            await asyncio.gather(
                *(ws.close(code=code, message=message) for ws, _ in sockets),
                return_exceptions=True,
            )
        await self.wait_until(lambda: not self._sockets, 5, "sockets still open after close_all")

    def frames_to(self, client_id: str, *, delivered_only: bool = True) -> list[Frame]:
        return [
            s.frame
            for s in self.sent
            if s.target == client_id and (s.delivered or not delivered_only)
        ]

    async def wait_for_frame(
        self,
        client_id: str,
        predicate: Callable[[Frame], bool] | None = None,
        timeout: float = 5,
        *,
        start: int = 0,
    ) -> Frame:
        """The first delivered frame to `client_id` (from `sent[start:]`) matching `predicate`."""
        found: list[Frame] = []

        def match() -> bool:
            for s in self.sent[start:]:
                if s.target == client_id and s.delivered and (predicate is None or predicate(s.frame)):
                    found.append(s.frame)
                    return True
            return False

        await self.wait_until(match, timeout, f"no matching frame delivered to {client_id!r}")
        return found[0]

    async def wait_for_client(self, client_id: str, timeout: float = 5) -> None:
        await self.wait_until(
            lambda: client_id in self.clients, timeout, f"{client_id!r} did not connect"
        )

    async def wait_gone(self, client_id: str, timeout: float = 5) -> None:
        await self.wait_until(
            lambda: client_id not in self.clients, timeout, f"{client_id!r} is still connected"
        )

    def _notify(self) -> None:
        # Waiters hold the old event; swapping it wakes them all exactly once.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5, what: str = "condition not met"
    ) -> None:
        """Wait until `predicate()` holds; it is re-checked after every (dis)connect, frame and send."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._changed
                    if predicate():
                        return
                    await event.wait()
        except TimeoutError:
            raise TimeoutError(f"{what} within {timeout}s; connected: {sorted(self.clients)}") from None


class RunningRouter:
    """A RouterDouble served on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(
        self, double: RouterDouble | None = None, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.double = double or RouterDouble()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self.double.make_app(), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self.port == 0:
            # Pin the ephemeral port so a restart comes back at the same URL.
            # (asyncio's and uvloop's servers both expose `sockets`.)
            sockets = getattr(site._server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening, then close every client socket with 1012 (via the app's on_shutdown)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self, pause: float = 0.0) -> None:
        await self.stop()
        if pause:
            await asyncio.sleep(pause)
        await self.start()

    async def __aenter__(self) -> "RunningRouter":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_router(
    port: int | None = None,
    *,
    master_be_api_key: str = DEFAULT_BE_KEY,
    master_agent_api_key: str = DEFAULT_ML_KEY,
) -> tuple[RouterDouble, str, Callable[[], Awaitable[None]]]:
    """Start a router double on 127.0.0.1 (`port=None`: a free one); returns (double, url, stop)."""
    running = RunningRouter(RouterDouble(master_be_api_key, master_agent_api_key), port or 0)
    await running.start()
    return running.double, running.url, running.stop


async def serve_router(
    aiohttp_server: Any, double: RouterDouble | None = None
) -> tuple[RouterDouble, str]:
    """Serve a router double with pytest-aiohttp's `aiohttp_server` fixture (torn down with it)."""
    double = double or RouterDouble()
    server = await aiohttp_server(double.make_app())
    return double, str(server.make_url("/ws")).replace("http://", "ws://", 1)
