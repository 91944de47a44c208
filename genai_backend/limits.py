"""Input limits in one place (README §Limits), and the JSON parse that enforces the nesting bound."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

import orjson

# JSON request bodies (uploads stream through multipart readers and have their own limit).
MAX_JSON_BODY = 1024 * 1024
# Deeper documents are refused before anything recurses over them: Python's recursion limit
# (~1000 frames) and orjson's encoder (255 levels, used for jsonb) are both far above this.
MAX_JSON_DEPTH = 100
# Largest `limit` / `per_page` of a list endpoint.
MAX_PAGE_SIZE = 1000
# Indexed identifiers (usernames, provider, configuration and model names): a btree entry holds
# at most ~2700 bytes, i.e. 675 characters of 4 bytes; 255 is far below and what clients expect.
MAX_KEY_LENGTH = 255
# Uploaded file names: not indexed, and never a path; room for long names, not for abuse.
MAX_FILE_NAME_LENGTH = 1024
# Server URLs (MCP, A2A): unique per user, so indexed too.
MAX_URL_LENGTH = 2048
# Every other stored string (descriptions, prompts, chat messages, titles).
MAX_TEXT_LENGTH = 262_144

_TOKENS_STR = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOKENS_BYTES = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_OPEN = frozenset(("[", "{", b"[", b"{"))
_CLOSE = frozenset(("]", "}", b"]", b"}"))
# Characters a PostgreSQL text or jsonb value cannot hold: NUL and lone surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than MAX_JSON_DEPTH; `pos` is where it crossed."""

    def __init__(self, pos: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"nesting depth exceeds {max_depth} levels at position {pos}")
        self.pos = pos
        self.max_depth = max_depth


def depth_exceeded(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> int | None:
    """The position where `data` (JSON text) first nests deeper than `max_depth`, or None."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None
    # C-speed passes: escapes out (so every quote delimits a string), strings out, everything
    # but brackets out, a running sum. The token scan below, which also finds the position,
    # runs only for a document that is too deep.
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[0::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_DELTA.__getitem__, brackets)), default=0) <= max_depth:
        return None
    tokens: Iterator[re.Match[Any]]
    tokens = _TOKENS_STR.finditer(data) if isinstance(data, str) else _TOKENS_BYTES.finditer(data)
    depth = 0
    for match in tokens:
        token = match.group()
        if token in _OPEN:
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in _CLOSE:
            depth -= 1
    return None


def loads(data: str | bytes, *, stdlib_fallback: bool = False) -> Any:
    """orjson.loads with the depth bound; raises JsonTooDeep or another ValueError.

    `stdlib_fallback` also accepts what only Python's parser takes (integers over 64 bits, NaN);
    its errors are ValueErrors too, never RecursionError, since the depth is checked first.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pos = depth_exceeded(data)
        if pos is not None:
            raise JsonTooDeep(pos) from None
        if not stdlib_fallback:
            raise
        return json.loads(data)
    pos = depth_exceeded(data)
    if pos is not None:
        raise JsonTooDeep(pos)
    return value


def unstorable(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a decoded document cannot be stored (NUL, lone surrogate, too deep), or None.

    Walks iteratively, so a deep document cannot overflow the stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return "a string holds a NUL character or a lone surrogate"
        elif isinstance(item, dict):
            if depth >= max_depth:
                return f"nested deeper than {max_depth} levels"
            for key, inner in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return "a key holds a NUL character or a lone surrogate"
                stack.append((inner, depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= max_depth:
                return f"nested deeper than {max_depth} levels"
            stack.extend((inner, depth + 1) for inner in item)
    return None
