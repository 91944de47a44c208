"""Make host names resolve to chosen addresses inside a test (no /etc/hosts, no DNS server needed)."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> Iterator[None]:
    """`names` (host → IPv4 address) answer from here; every other name resolves as usual.

    asyncio's default loop (and so aiohttp's threaded resolver and the guard's own lookups) calls
    `socket.getaddrinfo` at call time, so patching it reaches every client the service uses.
    """
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name in names:
            number = int(port) if port else 0
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (names[name], number))]
        return real(host, port, family, type, proto, flags)

    with monkeypatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield
