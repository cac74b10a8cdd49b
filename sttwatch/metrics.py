"""Prometheus metrics: served on ``metrics.listen`` or written to ``metrics.textfile``.

Two kinds of figures. What the store knows (jobs by state, the oldest unfinished job, spend,
undelivered hook events) is read from it at each scrape, by the same calls ``status --json``
makes, so the two always agree and every daemon on a shared store reports the same. What
only this process sees (requests and retries, bytes and audio sent, pickup latency, the
service's task time) is counted here. One private ``CollectorRegistry`` per daemon: no
module-level state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    write_to_textfile,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from .budget import Spent, caps
from .config import BudgetConfig
from .store import Store, StoreUnavailable

log = structlog.get_logger("sttwatch.metrics")

LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, float("inf"))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


class _StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, store: Store, budget: BudgetConfig, clock: Callable[[], float],
                 watches: Callable[[], Mapping[str, bool]]) -> None:
        self.store = store
        self.budget = budget
        self.clock = clock
        self.watches = watches

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sttwatch_store_up", "1 when the store answered this scrape")
        try:
            yield from self._from_store(self.clock())
        except StoreUnavailable:
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield up
        online = GaugeMetricFamily("sttwatch_watch_online", "1 while a watch folder is "
                                   "reachable (a share mounted, the folder present)",
                                   labels=["path"])
        try:
            states = dict(self.watches())
        except Exception:  # a scrape must never take the daemon down
            states = {}
        for path, ok in sorted(states.items()):
            online.add_metric([path], 1 if ok else 0)
        yield online

    def _from_store(self, now: float) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("sttwatch_jobs", "jobs in the store by state",
                                 labels=["state"])
        for state, n in self.store.counts().items():
            jobs.add_metric([state], n)
        oldest = self.store.oldest_unfinished()
        age = GaugeMetricFamily("sttwatch_oldest_unfinished_seconds",
                                "age of the oldest job not yet done or failed (0: none)")
        age.add_metric([], 0 if oldest is None else max(0.0, now - oldest.created_at))
        spent = Spent.read(self.store, now)
        spend = GaugeMetricFamily("sttwatch_spend_usd", "USD spent on creates (UTC periods)",
                                  labels=["period"])
        spend.add_metric(["day"], spent.usd_today)
        spend.add_metric(["month"], spent.usd_month)
        audio = GaugeMetricFamily("sttwatch_audio_hours_today", "hours of audio sent to the "
                                  "paid service this UTC day")
        audio.add_metric([], spent.audio_hours_today)
        limit = GaugeMetricFamily("sttwatch_budget_limit", "configured budget caps",
                                  labels=["cap"])
        for cap in caps(self.budget, spent, now):
            limit.add_metric([cap.name], cap.limit)
        outbox = self.store.outbox()
        events = GaugeMetricFamily("sttwatch_hook_events_undelivered",
                                   "completion events waiting to be delivered")
        events.add_metric([], outbox["undelivered"])
        yield from (jobs, age, spend, audio, limit, events)


class Metrics:
    """The registry and the counters the stages and the client feed."""

    def __init__(self, store: Store, budget: BudgetConfig, clock: Callable[[], float],
                 watches: Callable[[], Mapping[str, bool]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("sttwatch_requests", "HTTP requests to the service by "
                                 "endpoint and status code ('error': no answer)",
                                 ["endpoint", "code"], registry=r)
        self._retries = Counter("sttwatch_retries", "requests sent again after a timeout, "
                                "a connection error or a 5xx", registry=r)
        self._bytes = Counter("sttwatch_upload_bytes", "bytes of accepted uploads",
                              registry=r)
        self._audio = Counter("sttwatch_audio_submitted_seconds", "seconds of audio in "
                              "accepted creates (estimated from the files)", registry=r)
        self._pickup = Histogram("sttwatch_pickup_latency_seconds", "file settled (admitted) "
                                 "to its create accepted, first attempts only",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self._task = Histogram("sttwatch_service_task_seconds", "create accepted to result "
                               "stored (the service's task time as we see it)",
                               buckets=LATENCY_BUCKETS, registry=r)
        r.register(_StoreCollector(store, budget, clock, watches))

    # --- what the client and the stages report ------------------------------------------------
    def request(self, endpoint: str, code: int | None) -> None:
        self._requests.labels(endpoint, "error" if code is None else str(code)).inc()

    def retry(self) -> None:
        self._retries.inc()

    def submitted(self, size: int, audio_seconds: float, pickup_seconds: float | None) -> None:
        self._bytes.inc(size)
        self._audio.inc(audio_seconds)
        if pickup_seconds is not None:
            self._pickup.observe(max(0.0, pickup_seconds))

    def task_time(self, seconds: float) -> None:
        self._task.observe(max(0.0, seconds))

    # --- where they go ---------------------------------------------------------------------------
    def write_textfile(self, path: Path) -> None:
        """node_exporter's textfile collector: written to a temp file and renamed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(os.fspath(path), self.registry)

    def textfile_loop(self, path: Path, interval: float) -> Callable[[threading.Event], None]:
        def loop(stop: threading.Event) -> None:
            while True:
                try:
                    self.write_textfile(path)
                except OSError as exc:
                    log.error("metrics_textfile_failed", path=str(path), error=str(exc))
                if stop.wait(interval):
                    self.write_textfile(path)  # the last figures, as the daemon stops
                    return
        return loop

    def serve(self, host: str, port: int) -> Callable[[threading.Event], None]:
        """Bind now (a port in use is a start-up error); serve in the daemon's worker."""
        server: WSGIServer = make_server(host, port, make_wsgi_app(self.registry),
                                         ThreadingWSGIServer, handler_class=_Quiet)

        def loop(stop: threading.Event) -> None:
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                 name="metrics-http", daemon=True)
            t.start()
            log.info("metrics_listening", address=f"{host}:{server.server_port}")
            stop.wait()
            server.shutdown()
            server.server_close()
        return loop
