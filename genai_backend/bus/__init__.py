"""The back-end's life on the router (agent-bus.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web


@dataclass
class RouterStatus:
    """What /ready reports; written by the session supervisor, read by the health view."""

    # disabled | standby (another process leads) | connecting | connected | disconnected
    state: str = "disabled"
    since: float = 0.0
    last_error: str | None = None

    def set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        self.last_error = error


ROUTER_STATUS = web.AppKey("router_status", RouterStatus)


@dataclass
class Leadership:
    """Whether this process holds the router session for the whole service (bus/leader.py).

    Read by /ready and by anything that reports on the process (a metrics gauge).
    """

    leading: bool = False
    since: float = 0.0
    elected: int = 0  # terms won, ever

    def set(self, leading: bool) -> None:
        if leading != self.leading:
            self.since = time.time()
            self.elected += leading
        self.leading = leading


LEADERSHIP = web.AppKey("leadership", Leadership)
