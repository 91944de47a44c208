"""The back-end's life on the router (agent-bus.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web


@dataclass
class RouterStatus:
    """What /ready reports; written by the session supervisor, read by the health view."""

    state: str = "disabled"  # disabled | connecting | connected | disconnected
    since: float = 0.0
    last_error: str | None = None

    def set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        self.last_error = error


ROUTER_STATUS = web.AppKey("router_status", RouterStatus)
