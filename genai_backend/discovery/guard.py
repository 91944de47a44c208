"""The SSRF guard for outgoing discovery requests: URL policy, address classes, guarded HTTP clients.

Registration makes the service fetch user-supplied URLs (D29). Local and private networks are a
supported use case (that is where people run MCP servers and A2A agents); link-local and
cloud-metadata addresses never are. Every check happens after DNS resolution and again for
every connection (redirects included), so neither DNS tricks nor redirects get around it.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from genai_backend.discovery.urls import host_and_port

if TYPE_CHECKING:
    import httpcore2
    import httpx2

log = logging.getLogger(__name__)

# Largest response body a discovery request reads (a 20-tool listing is ~10 KB); time is bounded
# by each caller's timeout.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Always refused, whatever the policy: instance metadata services live here, and nothing a
# user legitimately registers does.
_BLOCKED_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure wire server
    "::/128", "fe80::/10", "fec0::/10", "ff00::/8",
    "fd00:ec2::254/128",  # AWS IMDS over IPv6
    "fd20:ce::254/128",  # GCP metadata over IPv6
))
# Refused only when `allow_private` is off: where people run their own MCP/A2A servers
# (localhost, docker networks, LANs, Tailscale's CGNAT range).
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "::1/128", "fc00::/7",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

AddressKind = Literal["blocked", "private", "public"]


class UrlRefused(OSError):
    """The destination is not allowed by the URL policy.

    An OSError, so aiohttp reports it as a connection error (its `os_error`/`__cause__` is this).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def find_refusal(exc: BaseException | None) -> UrlRefused | None:
    """The UrlRefused behind a failed request, wherever the client library wrapped it.

    aiohttp keeps it as `os_error`, httpx and the MCP SDK as a cause or context, anyio inside
    exception groups.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UrlRefused):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend((getattr(current, "os_error", None), current.__cause__, current.__context__))
    return None


def classify_address(address: str | IpAddress) -> AddressKind:
    """`blocked` (never contacted), `private` (loopback, RFC 1918, ULA, CGNAT) or `public`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 reaches the IPv4 host: judge the IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return classify_address(embedded)
    if any(ip in net for net in _BLOCKED_NETWORKS):
        return "blocked"
    if any(ip in net for net in _PRIVATE_NETWORKS):
        return "private"
    # Documentation, benchmarking, reserved and other special-purpose ranges.
    return "public" if ip.is_global else "blocked"


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class UrlPolicy:
    """Where discovery requests may go.

    `allow_hosts` holds host names (exact, case-insensitive) or IP networks in CIDR notation that
    may be private even when `allow_private` is off. Nothing lifts the link-local / metadata ban.
    """

    allow_private: bool = True
    allow_hosts: tuple[str, ...] = ()

    @cached_property
    def _allowed_names(self) -> frozenset[str]:
        return frozenset(entry.strip().lower().rstrip(".") for entry in self.allow_hosts
                         if _network(entry) is None)

    @cached_property
    def _allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(net for net in map(_network, self.allow_hosts) if net is not None)

    def host_allowed(self, host: str) -> bool:
        return host.lower().strip("[]").rstrip(".") in self._allowed_names

    def refusal(self, host: str, address: str | IpAddress, *, host_allowed: bool = False) -> str | None:
        """Why `address` (which `host` resolved to) may not be contacted, or None when it may."""
        ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
        kind = classify_address(ip)
        subject = str(ip) if _ip_literal(host) == ip else f"{host} resolves to {ip}"
        if kind == "blocked":
            return f"{subject}: link-local, cloud-metadata and reserved addresses are never contacted"
        if kind == "private" and not self.allow_private and not host_allowed \
                and not any(ip in net for net in self._allowed_networks):
            return (f"{subject}, a private address: private networks are not allowed "
                    "(URL_ALLOW_PRIVATE=false and the host is not in URL_ALLOW_HOSTS)")
        return None

    def vet(self, host: str, addresses: Iterable[str | IpAddress]) -> None:
        """Raise UrlRefused unless every address `host` resolved to may be contacted."""
        allowed = self.host_allowed(host)
        for address in addresses:
            reason = self.refusal(host, address, host_allowed=allowed)
            if reason is not None:
                raise UrlRefused(reason)


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
    except ValueError:
        return None


async def resolve(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """The addresses of `host` (an IP literal is its own address), all vetted by `policy`."""
    literal = _ip_literal(host)
    if literal is not None:
        policy.vet(host, [literal])
        return [str(literal)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    policy.vet(host, addresses)
    return addresses


async def check_url(url: str, policy: UrlPolicy) -> None:
    """Refuse (UrlRefused) a URL whose host resolves to any address the policy forbids.

    Raises UrlError for a malformed URL. A name that does not resolve is not refused: the request
    itself will then fail as "unreachable". This check gives an early, clear answer; the guarded
    clients below repeat it at connection time, which is what actually protects (DNS answers can
    change between this check and the connection, and redirects go elsewhere).
    """
    host, port = host_and_port(url)
    try:
        await resolve(host, port, policy)
    except socket.gaierror as exc:
        log.debug("check_url: %s does not resolve: %s", host, exc)


# ----- aiohttp -------------------------------------------------------------------------------

class _ConnectionGuard:
    """Shared state of one guarded connector: the policy and the private addresses it approved by name."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy
        # Private addresses of allow-listed *names*: at socket level only the address is known.
        self.approved: set[str] = set()

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        # aiohttp hands IP-literal hosts straight to the connect step, bypassing the resolver;
        # this is the one place every connection attempt passes through.
        if address not in self.approved:
            reason = self.policy.refusal(address, address)
            if reason is not None:
                raise UrlRefused(reason)
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(AbstractResolver):
    """The loop's getaddrinfo, refusing names that resolve to addresses the policy forbids."""

    def __init__(self, guard: _ConnectionGuard) -> None:
        self._guard = guard
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        policy = self._guard.policy
        policy.vet(host, [result["host"] for result in results])
        if policy.host_allowed(host):
            self._guard.approved.update(result["host"] for result in results)
        return results

    async def close(self) -> None:
        await self._resolver.close()


def guarded_connector(policy: UrlPolicy, **kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector that only ever connects to addresses `policy` allows (also after redirects).

    A refused destination surfaces as `aiohttp.ClientConnectorError` (or its DNS subclass) whose
    `os_error` is a UrlRefused.
    """
    guard = _ConnectionGuard(policy)
    return aiohttp.TCPConnector(resolver=GuardedResolver(guard), socket_factory=guard.socket_factory, **kwargs)


# ----- httpx2 (used by the MCP SDK) -----------------------------------------------------------

class _GuardedNetworkBackend:
    """An httpcore2 network backend that resolves, vets and then connects to the vetted address.

    Connecting to the address that was vetted (not to the name again) closes the gap between the
    check and the connection; TLS still verifies against the URL's host name, which httpcore2
    passes to `start_tls` separately.
    """

    def __init__(self, policy: UrlPolicy) -> None:
        import httpcore2

        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        import httpcore2

        try:
            addresses = await resolve(host, port, self._policy)
        except socket.gaierror as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from exc
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore2.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        raise UrlRefused("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_httpx_client(policy: UrlPolicy, *, headers: dict[str, str] | None = None,
                         timeout: httpx2.Timeout | float | None = None, auth: httpx2.Auth | None = None,
                         event_hooks: dict[str, list[Any]] | None = None) -> httpx2.AsyncClient:
    """An httpx2.AsyncClient whose every connection (redirects included) goes only where `policy` allows.

    The signature fits the MCP SDK's `httpx_client_factory` (headers, timeout, auth). Environment
    proxies are ignored: through a proxy the guard would vet the proxy, not the destination.
    A refused destination raises UrlRefused from the request; a response body larger than
    MAX_RESPONSE_BYTES raises ResponseTooLarge while it is read.
    """
    import httpcore2
    import httpx2

    ssl_context = _ssl_context()
    transport = _capped_transport_class()(verify=ssl_context, trust_env=False)
    limits = httpx2.Limits()
    # httpx2's transport has no network-backend parameter; its pool is the documented httpcore2
    # AsyncConnectionPool, rebuilt here with the guarded backend and the same settings.
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=ssl_context, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=_GuardedNetworkBackend(policy))  # type: ignore[arg-type]
    return httpx2.AsyncClient(
        transport=transport, headers=headers, auth=auth, trust_env=False, event_hooks=event_hooks,
        timeout=timeout if timeout is not None else httpx2.Timeout(30.0, read=300.0))


class ResponseTooLarge(Exception):
    """A discovery response body went past MAX_RESPONSE_BYTES."""


@cache
def _capped_transport_class() -> type[httpx2.AsyncHTTPTransport]:
    """An httpx2 transport whose response bodies stop at MAX_RESPONSE_BYTES (built once, httpx2 is lazy)."""
    import httpx2

    class CappedStream(httpx2.AsyncByteStream):
        def __init__(self, inner: httpx2.AsyncByteStream) -> None:
            self._inner = inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen, limit = 0, MAX_RESPONSE_BYTES
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > limit:
                    raise ResponseTooLarge(f"response body larger than {limit} bytes")
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    class CappedTransport(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            response = await super().handle_async_request(request)
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = CappedStream(response.stream)
            return response

    return CappedTransport


@cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms; one verifying context serves every client.
    import httpx2

    return httpx2.create_ssl_context(verify=True, trust_env=False)
