"""Flow re-evaluation (background-jobs.md §4), shared by the bus, agent deletion and tool refresh."""
from __future__ import annotations

import uuid

import asyncpg

from genai_backend.db import queries


async def reevaluate_flows(conn: asyncpg.Connection | asyncpg.Pool, creator_id: uuid.UUID) -> None:
    """Recompute `is_active` of one owner's flows with the full predicate (every element, every
    kind), writing only the rows whose flag changes (D20). Reads recompute it anyway; the stored
    flag is informative."""
    await queries.reevaluate_flows(conn, creator_id=creator_id)
