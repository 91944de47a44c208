"""URL normalisation compatible with pydantic's AnyHttpUrl: the stored form of every registered URL."""
from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass
from typing import Any

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


def host_and_port(url: str) -> tuple[str, int]:
    """The (normalised) host of `url` and the port a connection goes to (default ports filled in)."""
    parsed = _parse(url)
    return parsed.host, _DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port


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
