"""The Prometheus metric families (prometheus-client) and the live values read at scrape time.

Per process: each process exposes its own values at its own `/metrics`; nothing is shared between
workers or instances (see README "Operations"). Values that already exist elsewhere (pool size,
open sockets, router state, catalogue cache counts) are read when scraped, so keeping them costs
the hot paths nothing.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# 1 ms to 10 s, roughly three buckets per decade.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A master agent runs LLM calls: seconds to minutes (MASTER_AGENT_TIMEOUT defaults to 600 s).
AGENT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ACQUIRE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
JOB_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)



class LoopCounter:
    """A counter only the event loop's thread changes: no lock (prometheus-client takes one per inc)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class LoopHistogram:
    """A histogram only the event loop's thread changes: one bisect and two additions per observation."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, i.e. Prometheus' `le`.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, found = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            cumulative += count
            found.append((floatToGoString(bound), float(cumulative)))
        return found


# The per-request families: (method, route, status) and (method, route) label values -> cells.
HTTP_REQUESTS: dict[tuple[str, str, str], LoopCounter] = {}
HTTP_DURATION: dict[tuple[str, str], LoopHistogram] = {}
DB_ACQUIRE = LoopHistogram(ACQUIRE_BUCKETS)


def http_cells(method: str, route: str, status: int) -> tuple[LoopCounter, LoopHistogram]:
    counter = HTTP_REQUESTS.setdefault((method, route, str(status)), LoopCounter())
    histogram = HTTP_DURATION.get((method, route))
    if histogram is None:
        histogram = HTTP_DURATION[(method, route)] = LoopHistogram(HTTP_BUCKETS)
    return counter, histogram

CHAT_STARTED = Counter("genai_chat_turns_started", "Chat messages accepted for processing (valid frames)")
CHAT_FINISHED = Counter("genai_chat_turns_finished",
                        "Chat turns answered; result=error when the answer is a failure object (D09)", ("result",))
CHAT_FAILED = Counter("genai_chat_turns_failed",
                      "Chat turns that ended without an answer and closed the socket", ("reason",))
MASTER_DURATION = Histogram("genai_master_agent_duration_seconds",
                            "Master-agent round trip through the router, invocation sent to answer received",
                            buckets=AGENT_BUCKETS)
MASTER_ABSENT = Counter("genai_master_agent_absent", "Invocations the router refused: master agent not connected")
MASTER_TIMEOUTS = Counter("genai_master_agent_timeouts", "Invocations that hit MASTER_AGENT_TIMEOUT")

ROUTER_RECONNECTS = Counter("genai_router_reconnects", "Router session connections after the first one")
ROUTER_LEADER = Gauge("genai_router_session_leader", "1 while this process holds the router session")

LOG_FRAMES_PUSHED = Counter("genai_agent_log_frames_pushed", "Agent log frames sent to front-end sockets")
LOG_FRAMES_DROPPED = Counter("genai_agent_log_frames_dropped",
                             "Agent log frames not delivered to an owner's socket (closed or failing)")

DB_UNAVAILABLE = Counter("genai_db_unavailable_answers", "503 answers given because the database was unreachable")

LOGIN_ATTEMPTS = Counter(
    "genai_login_attempts", "Logins by outcome: success, failure, throttled (429), busy (503: hash queue full)", ("outcome",))

JOB_RUNS = Counter("genai_job_runs", "Background job runs by job and outcome (success, failure)", ("job", "outcome"))
JOB_DURATION = Histogram("genai_job_duration_seconds", "Background job run time", ("job",), buckets=JOB_BUCKETS)
DISCOVERY_FAILURES = Counter("genai_discovery_failures", "MCP server or A2A card lookups that failed", ("kind",))

for _outcome in ("success", "failure", "throttled", "busy"):
    LOGIN_ATTEMPTS.labels(_outcome)
for _kind in ("mcp", "a2a"):
    DISCOVERY_FAILURES.labels(_kind)
for _result in ("success", "error"):
    CHAT_FINISHED.labels(_result)


class _Live:
    """Plain integers the event loop changes without locks (one thread), read at scrape time."""

    in_flight = 0
    hash_queue = 0
    pool_waiting = 0


LIVE = _Live()


def login_attempt(outcome: str) -> None:
    """Count one login: "success", "failure", "throttled" or "busy"."""
    LOGIN_ATTEMPTS.labels(outcome).inc()


def set_router_leader(leader: bool) -> None:
    """Whether this process holds the router session now (the leadership code calls this)."""
    ROUTER_LEADER.set(1 if leader else 0)


@contextmanager
def hashing() -> Iterator[None]:
    """Around one password hash or check: the queue length is those submitted and not yet done."""
    LIVE.hash_queue += 1
    try:
        yield
    finally:
        LIVE.hash_queue -= 1


async def timed_job(job: str, run: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        result = await run()
    except Exception:
        JOB_RUNS.labels(job, "failure").inc()
        raise
    finally:
        JOB_DURATION.labels(job).observe(time.perf_counter() - started)
    JOB_RUNS.labels(job, "success").inc()
    return result


ROUTER_STATES = ("disabled", "connecting", "connected", "disconnected")


class _AppCollector(Collector):
    """Values owned by the running application(s) of this process, summed (normally one app)."""

    def __init__(self) -> None:
        self.apps: list[web.Application] = []

    def describe(self) -> Iterable[Metric]:
        # The registry asks for names at registration, when the owners below are not importable yet.
        for name in ("genai_http_requests_in_flight", "genai_password_hash_queue", "genai_db_pool_waiting",
                     "genai_db_pool_size", "genai_db_pool_in_use", "genai_db_pool_max", "genai_chat_sockets_open",
                     "genai_router_connected", "genai_router_state", "genai_large_answers_in_memory",
                     "genai_large_answers_waiting"):
            yield GaugeMetricFamily(name, "")
        for name in ("genai_catalogue_cache_hits", "genai_catalogue_cache_misses", "genai_http_requests"):
            yield CounterMetricFamily(name, "")
        for name in ("genai_http_request_duration_seconds", "genai_db_pool_acquire_duration_seconds"):
            yield HistogramMetricFamily(name, "")

    def collect(self) -> Iterable[Metric]:
        # Imported here: the owners of these values import this module for their call sites.
        from genai_backend.answers import ANSWERS
        from genai_backend.bus import ROUTER_STATUS
        from genai_backend.catalogues import CATALOGUES
        from genai_backend.db import POOL
        from genai_backend.sockets import SOCKETS

        requests = CounterMetricFamily("genai_http_requests", "HTTP requests answered, by method, route template "
                                       "and status", labels=("method", "route", "status"))
        for labels, cell in list(HTTP_REQUESTS.items()):
            requests.add_metric(labels, cell.value)
        yield requests
        durations = HistogramMetricFamily("genai_http_request_duration_seconds", "Time from receiving a request to "
                                          "its response (WebSocket upgrades excluded)", labels=("method", "route"))
        for pair, cells in list(HTTP_DURATION.items()):
            durations.add_metric(pair, cells.buckets(), cells.total)
        yield durations
        acquire = HistogramMetricFamily("genai_db_pool_acquire_duration_seconds", "Time to get a connection "
                                        "from the pool")
        acquire.add_metric([], DB_ACQUIRE.buckets(), DB_ACQUIRE.total)
        yield acquire
        in_flight = GaugeMetricFamily("genai_http_requests_in_flight", "HTTP requests being handled now")
        in_flight.add_metric([], LIVE.in_flight)
        yield in_flight
        hashes = GaugeMetricFamily("genai_password_hash_queue", "Password hashes and checks submitted, not finished")
        hashes.add_metric([], LIVE.hash_queue)
        yield hashes
        waiting = GaugeMetricFamily("genai_db_pool_waiting", "Tasks waiting for a pool connection now")
        waiting.add_metric([], LIVE.pool_waiting)
        yield waiting
        size = in_use = maximum = sockets = hits = misses = large = large_waiting = 0
        states = dict.fromkeys(ROUTER_STATES, 0)
        for app in self.apps:
            pool = app.get(POOL)
            if pool is not None:
                size += pool.get_size()
                in_use += pool.get_size() - pool.get_idle_size()
                maximum += pool.get_max_size()
            registry = app.get(SOCKETS)
            sockets += registry.count() if registry is not None else 0
            catalogues = app.get(CATALOGUES)
            if catalogues is not None:
                hits += catalogues.hits
                misses += catalogues.misses
            answers = app.get(ANSWERS)
            if answers is not None:
                large += answers.in_memory
                large_waiting += answers.waiting
            status = app.get(ROUTER_STATUS)
            if status is not None and status.state in states:
                states[status.state] += 1
        for name, doc, value in (("genai_db_pool_size", "Open connections in the pool", size),
                                 ("genai_db_pool_in_use", "Pool connections handed out now", in_use),
                                 ("genai_db_pool_max", "DB_POOL_SIZE: the pool's upper bound", maximum),
                                 ("genai_chat_sockets_open", "Open front-end chat WebSockets", sockets),
                                 ("genai_router_connected", "1 while the router session is connected",
                                  states["connected"]),
                                 ("genai_large_answers_in_memory", "List answers over LARGE_ANSWER being built or "
                                  "sent now (at most the lanes)", large),
                                 ("genai_large_answers_waiting", "Large list answers waiting for a lane", large_waiting)):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        state = GaugeMetricFamily("genai_router_state", "The router session's state (one of them is 1)",
                                  labels=("state",))
        for state_name, count in states.items():
            state.add_metric([state_name], count)
        yield state
        for name, doc, value in (("genai_catalogue_cache_hits", "Catalogue answers served from the cache", hits),
                                 ("genai_catalogue_cache_misses", "Catalogue answers built from the database",
                                  misses)):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter


APP_VALUES = _AppCollector()
REGISTRY.register(APP_VALUES)


def metered_pool_class(base: Any) -> Any:
    """A subclass of the pool class `base` with acquire latency and waiting acquirers measured."""

    class MeteredPool(base):
        __slots__ = ()

        async def _acquire(self, timeout: float | None) -> Any:
            # Every acquire goes through here (`async with pool.acquire()` and awaited acquires),
            # and the wait at the pool's gate (fairpool.FairPool) counts.
            LIVE.pool_waiting += 1
            started = time.perf_counter()
            try:
                return await super()._acquire(timeout)
            finally:
                LIVE.pool_waiting -= 1
                DB_ACQUIRE.observe(time.perf_counter() - started)

    return MeteredPool
