"""Agent and flow names and aliases (spec README §Names and aliases).

The master agent recovers a tool's real name by cutting the last `_xxxxxx` segment off its
alias, so the alias format `<base>_<6 letters a-z>` is part of the contract.
"""
from __future__ import annotations

import random
import string
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

MAX_NAME_LENGTH = 55
ALIAS_SUFFIX_LENGTH = 6
# A collision needs two equal bases and the same 6 letters (1 in 308 million); a handful of
# attempts turns "practically never" into "never".
ALIAS_ATTEMPTS = 8

T = TypeVar("T")


def normalise_name(raw: str) -> str:
    """Spaces become underscores, then lower-case (Python's str.lower, like the reference)."""
    return raw.replace(" ", "_").lower()


def check_name_length(raw: str, kind: str) -> None:
    """The length is checked on the raw string; the reference's text says "less than"."""
    if len(raw) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} name must be less than {MAX_NAME_LENGTH} characters")


def new_alias(base: str) -> str:
    suffix = "".join(random.choices(string.ascii_lowercase, k=ALIAS_SUFFIX_LENGTH))
    return f"{base}_{suffix}"


def alias_base(alias: str) -> str:
    """The alias without its last `_xxxxxx` segment."""
    return alias.rsplit("_", 1)[0]


async def with_unique_alias(base: str, write: Callable[[str], Awaitable[T]], constraint: str) -> T:
    """Run `write(alias)` with fresh aliases until the alias unique constraint stops objecting.

    `write` must be atomic on its own (one statement, or its own savepoint), so a collision
    leaves nothing behind. Other unique violations propagate to the caller.
    """
    for attempt in range(ALIAS_ATTEMPTS):
        try:
            return await write(new_alias(base))
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != constraint or attempt == ALIAS_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
