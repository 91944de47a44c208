"""URL normalisation (pydantic AnyHttpUrl-compatible) and the SSRF guard for outgoing discovery requests."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

if TYPE_CHECKING:
    import httpcore2
    import httpx2

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --------------------------------------------------------------------------------------------
# Normalisation. The reference validates URLs with pydantic's AnyHttpUrl, i.e. the Rust `url`
# crate (WHATWG URL standard); clients compare the stored strings, so this follows the same
# algorithm for special schemes, and reports the crate's error texts.
# --------------------------------------------------------------------------------------------

_SCHEME_MSG = "URL scheme should be 'http' or 'https'"
_EXPECTED_SCHEMES = "'http' or 'https'"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_C0_OR_SPACE = "".join(chr(i) for i in range(0x21))
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_CHARS = _ALPHA | frozenset("0123456789+-.")

# WHATWG percent-encode sets (code points outside printable ASCII are always encoded).
_FRAGMENT_SET = frozenset(' "<>`')
_SPECIAL_QUERY_SET = frozenset(" \"#<>'")
_PATH_SET = frozenset(' "#<>?`{}')
_USERINFO_SET = _PATH_SET | frozenset("/:;=@[\\]^|")
_FORBIDDEN_DOMAIN = frozenset(chr(i) for i in range(0x21)) | frozenset('#%/:<>?@[\\]^|\x7f')
_SINGLE_DOT = frozenset({".", "%2e"})
_DOUBLE_DOT = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})

IDNA_ERROR = "invalid international domain name"
# Disallowed by the url crate's UTS #46 table but mapped/ignored by the `idna` package's newer one
# (mostly invisible fillers and format characters, which have no business in a host name).
_URL_CRATE_DISALLOWED = frozenset(
    [0x4C0, 0x1806, 0x180E, 0x2132, 0x2183, 0x3164, 0xFFA0, 0x115F, 0x1160, 0x17B4, 0x17B5]
    + list(range(0x10A0, 0x10C6)) + list(range(0x2061, 0x2064)) + list(range(0x206A, 0x2070))
    + list(range(0x1D173, 0x1D17B)))


class UrlError(ValueError):
    """A URL that pydantic's AnyHttpUrl would reject; `type`/`msg`/`ctx` are its 422 error fields."""

    def __init__(self, type_: str, msg: str, ctx: dict[str, Any] | None) -> None:
        super().__init__(msg)
        self.type = type_
        self.msg = msg
        self.ctx = ctx


def _parsing_error(error: str) -> UrlError:
    return UrlError("url_parsing", f"Input should be a valid URL, {error}", {"error": error})


def _scheme_error() -> UrlError:
    return UrlError("url_scheme", _SCHEME_MSG, {"expected_schemes": _EXPECTED_SCHEMES})


@dataclass(frozen=True)
class _Url:
    scheme: str
    username: str
    password: str
    host: str
    port: int | None
    path: str
    query: str | None
    fragment: str | None

    @property
    def origin(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.username or self.password:
            userinfo = self.username + (f":{self.password}" if self.password else "") + "@"
        port = "" if self.port is None else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        fragment = "" if self.fragment is None else f"#{self.fragment}"
        return f"{self.scheme}://{userinfo}{self.host}{port}{self.path}{query}{fragment}"


def normalise_url(raw: str) -> str:
    """What `str(AnyHttpUrl(raw))` gives: lower-case scheme and host, no default port, `/` for an empty path."""
    return str(_parse(raw))


def origin(url: str) -> str:
    """`scheme://host[:port]` of `url`, without userinfo, path or trailing slash (the A2A base)."""
    return _parse(url).origin


def _parse(raw: str) -> _Url:
    if raw == "":
        raise _parsing_error("input is empty")
    text = raw.strip(_C0_OR_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    scheme, rest = _split_scheme(text)
    if scheme is None:
        raise _parsing_error("relative URL without a base")
    if scheme not in _DEFAULT_PORTS:
        # Non-special schemes parse fine in the url crate and are refused afterwards by pydantic.
        raise _scheme_error()
    url = _parse_special(scheme, rest)
    if scheme not in ("http", "https"):
        raise _scheme_error()
    return url


def _split_scheme(text: str) -> tuple[str | None, str]:
    if not text or text[0] not in _ALPHA:
        return None, text
    for i, char in enumerate(text):
        if char == ":":
            return text[:i].lower(), text[i + 1:]
        if char not in _SCHEME_CHARS:
            break
    return None, text


def _parse_special(scheme: str, rest: str) -> _Url:
    # Special schemes ignore any number of slashes (and backslashes) before the authority.
    rest = rest.lstrip("/\\")
    end = len(rest)
    for i, char in enumerate(rest):
        if char in "/\\?#":
            end = i
            break
    authority, tail = rest[:end], rest[end:]

    username = password = ""
    at = authority.rfind("@")
    if at >= 0:
        userinfo, authority = authority[:at], authority[at + 1:]
        user, colon, secret = userinfo.partition(":")
        username = _percent_encode(user, _USERINFO_SET)
        password = _percent_encode(secret, _USERINFO_SET) if colon else ""

    host_text, port_text = authority, None
    in_brackets = False
    for i, char in enumerate(authority):
        if char == "[":
            in_brackets = True
        elif char == "]":
            in_brackets = False
        elif char == ":" and not in_brackets:
            host_text, port_text = authority[:i], authority[i + 1:]
            break
    if not host_text:
        raise _parsing_error("empty host")
    host = _parse_host(host_text)
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            raise _parsing_error("invalid port number")
        port = int(port_text)
        if port == _DEFAULT_PORTS[scheme]:
            port = None

    fragment: str | None = None
    query: str | None = None
    hash_at = tail.find("#")
    if hash_at >= 0:
        tail, fragment = tail[:hash_at], _percent_encode(tail[hash_at + 1:], _FRAGMENT_SET)
    question = tail.find("?")
    if question >= 0:
        tail, query = tail[:question], _percent_encode(tail[question + 1:], _SPECIAL_QUERY_SET)
    return _Url(scheme, username, password, host, port, _parse_path(tail), query, fragment)


def _parse_path(path: str) -> str:
    if path[:1] in ("/", "\\"):
        path = path[1:]
    raw_segments = path.replace("\\", "/").split("/")
    segments: list[str] = []
    last = len(raw_segments) - 1
    for i, raw_segment in enumerate(raw_segments):
        segment = _percent_encode(raw_segment, _PATH_SET)
        lowered = segment.lower()
        if lowered in _DOUBLE_DOT:
            if segments:
                segments.pop()
            if i == last:
                segments.append("")
        elif lowered in _SINGLE_DOT:
            if i == last:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


def _percent_encode(text: str, encode_set: frozenset[str]) -> str:
    if text.isascii() and text.isprintable() and not any(char in encode_set for char in text):
        return text
    out: list[str] = []
    for char in text:
        if char in encode_set or not (0x20 <= ord(char) < 0x7F):
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        else:
            out.append(char)
    return "".join(out)


def _percent_decode(text: str) -> str:
    if "%" not in text:
        return text
    data = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25 and _is_hex(data[i + 1:i + 3]):
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(chr(b) in "0123456789abcdefABCDEF" for b in pair)


def _parse_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise _parsing_error("invalid IPv6 address")
        return f"[{_ipv6_serialise(_parse_ipv6(text[1:-1]))}]"
    domain = _domain_to_ascii(_percent_decode(text))
    if _ends_in_number(domain):
        return str(_parse_ipv4(domain))
    return domain


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    if "%" in text or not text.isascii():
        raise _parsing_error("invalid IPv6 address")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise _parsing_error("invalid IPv6 address") from None


def _ipv6_serialise(address: ipaddress.IPv6Address) -> str:
    # WHATWG: hex pieces (embedded IPv4 is printed as hex too), first longest run of >= 2 zeros compressed.
    pieces = [int.from_bytes(address.packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len, start = -1, 1, -1
    for i, piece in enumerate(pieces + [1]):
        if piece == 0 and start < 0:
            start = i
        elif piece != 0 and start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    if best_start < 0:
        return ":".join(f"{piece:x}" for piece in pieces)
    head = ":".join(f"{piece:x}" for piece in pieces[:best_start])
    tail = ":".join(f"{piece:x}" for piece in pieces[best_start + best_len:])
    return f"{head}::{tail}"


def _domain_to_ascii(domain: str) -> str:
    try:
        ascii_domain = _idna_to_ascii(domain)
    except UrlError:
        raise
    except (ValueError, UnicodeError):  # idna.IDNAError is a UnicodeError
        raise _parsing_error(IDNA_ERROR) from None
    if not ascii_domain:
        # Everything was mapped away (e.g. a lone soft hyphen).
        raise _parsing_error("empty host")
    if any(char in _FORBIDDEN_DOMAIN for char in ascii_domain):
        raise _parsing_error(IDNA_ERROR)
    return ascii_domain


def _idna_to_ascii(domain: str) -> str:
    # UTS #46 non-transitional processing without hyphen or DNS-length checks, as the url crate
    # does: docker-style names such as `my_mcp-server` must survive, IDNA2008 strictness would not.
    if domain.isascii():
        ascii_domain = domain.lower()
        for label in ascii_domain.split("."):
            if label.startswith("xn--"):
                _check_punycode_label(label)
        return ascii_domain

    import idna

    if any(ord(char) in _URL_CRATE_DISALLOWED or unicodedata.category(char) == "Cn" for char in domain):
        raise _parsing_error(IDNA_ERROR)
    mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
    # In a domain with any right-to-left label, every label must pass the RFC 5893 bidi rule.
    bidi_domain = any(unicodedata.bidirectional(char) in ("R", "AL", "AN") for char in mapped)
    labels = []
    for label in mapped.split("."):
        if label.isascii():
            if label.startswith("xn--"):
                _check_punycode_label(label)
            elif bidi_domain and label:
                idna.check_bidi(label, check_ltr=True)
            labels.append(label)
        elif label.startswith("xn--"):
            raise _parsing_error(IDNA_ERROR)
        else:
            _check_unicode_label(label, bidi_domain)
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(labels)


def _check_unicode_label(label: str, bidi_domain: bool) -> None:
    import idna

    if not unicodedata.is_normalized("NFC", label) or unicodedata.category(label[0]).startswith("M"):
        raise _parsing_error(IDNA_ERROR)
    for position, char in enumerate(label):
        if char in "\u200c\u200d" and not idna.valid_contextj(label, position):
            raise _parsing_error(IDNA_ERROR)
    idna.check_bidi(label, check_ltr=bidi_domain)


def _check_punycode_label(label: str) -> None:
    import idna

    decoded = label[4:].encode("ascii").decode("punycode")
    if (not label[4:] or decoded.isascii()
            or idna.uts46_remap(decoded, std3_rules=False, transitional=False) != decoded):
        raise _parsing_error(IDNA_ERROR)
    _check_unicode_label(decoded, False)


def _ends_in_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    return (last != "" and last.isascii() and last.isdigit()) or _ipv4_number(last) is not None


def _ipv4_number(text: str) -> int | None:
    if text == "":
        return None
    radix = 10
    if text[:2] in ("0x", "0X"):
        text, radix = text[2:], 16
    elif len(text) >= 2 and text[0] == "0":
        text, radix = text[1:], 8
    if text == "":
        return 0
    digits = {10: "0123456789", 16: "0123456789abcdefABCDEF", 8: "01234567"}[radix]
    if not all(char in digits for char in text):
        return None
    return int(text, radix)


def _parse_ipv4(domain: str) -> ipaddress.IPv4Address:
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or any(number is None for number in numbers):
        raise _parsing_error("invalid IPv4 address")
    values = [number for number in numbers if number is not None]
    if any(value > 255 for value in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise _parsing_error("invalid IPv4 address")
    address = values[-1]
    for i, value in enumerate(values[:-1]):
        address += value * 256 ** (3 - i)
    return ipaddress.IPv4Address(address)


# --------------------------------------------------------------------------------------------
# SSRF guard (D29). Registration makes the service fetch user-supplied URLs; local and private
# networks are a supported use case, link-local / cloud-metadata addresses never are.
# --------------------------------------------------------------------------------------------

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
    parsed = _parse(url)
    port = _DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    try:
        await resolve(parsed.host, port, policy)
    except socket.gaierror as exc:
        log.debug("check_url: %s does not resolve: %s", parsed.host, exc)


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
    A refused destination raises UrlRefused from the request.
    """
    import httpcore2
    import httpx2

    ssl_context = _ssl_context()
    transport = httpx2.AsyncHTTPTransport(verify=ssl_context, trust_env=False)
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


@cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms; one verifying context serves every client.
    import httpx2

    return httpx2.create_ssl_context(verify=True, trust_env=False)
