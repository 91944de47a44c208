"""Outgoing calls seen from both sides at once: a span while tracing, a counter always."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from genai_backend.observability import metrics, tracing

AGENT_NOT_ACTIVE = "Agent is NOT active"
TIMED_OUT = "Request timed out"


@contextmanager
def discovery_call(kind: str, url: str) -> Iterator[None]:
    """One MCP tool listing or A2A card fetch; a failure of any kind is counted."""
    with tracing.span(f"{kind} discovery", {"url.full": url, "genai.discovery": kind}, client=True):
        try:
            yield
        except Exception:
            metrics.DISCOVERY_FAILURES.labels(kind).inc()
            raise


def invocation_done(result: Any) -> None:
    """A master-agent invocation's answer (`bus.invoke.Invocation`): its latency and why it failed."""
    metrics.MASTER_DURATION.observe(result.answered_at - result.sent_at)
    if not result.is_success:
        if result.response == AGENT_NOT_ACTIVE:
            metrics.MASTER_ABSENT.inc()
        elif result.response == TIMED_OUT:
            metrics.MASTER_TIMEOUTS.inc()


def log_frames(sent: int, sockets: int) -> None:
    """One agent log pushed to its owner's `sockets`, `sent` of them successfully."""
    metrics.LOG_FRAMES_PUSHED.inc(sent)
    if sockets > sent:
        metrics.LOG_FRAMES_DROPPED.inc(sockets - sent)
