"""The main loop: takes settled files into the store, supervises the stage threads, keeps
this daemon's leases and heartbeat, talks to systemd, and turns the flags set by signal
handlers into a stop or a reload.

Signal handlers never do more than set a flag; everything happens here, in one thread, but
the leases and the heartbeat: those have a thread of their own (the keeper), so that no scan,
admission batch or slow store call delays a renewal or systemd's watchdog ping. The keeper
pings the watchdog only while the main loop still turns (within ``MAIN_STALL``), so a wedged
daemon is still restarted.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from .admission import BATCH, Admitter
from .config import Config
from .errors import BackendUnavailable, ConfigError, CreditsExhausted
from .exitcodes import ExitCode
from .notify import Notifier
from .pipeline import Pipeline
from .plan import Planner
from .settings import PipelineSettings
from .store import UNFINISHED, State, Store, StoreUnavailable
from .transcripts import sweep_leftovers
from .watcher import Settled, Watcher

log = structlog.get_logger("sttwatch.daemon")
T = TypeVar("T")

STATUS_REFRESH = 10.0  # seconds; status.STALE_AFTER must stay well above it
ONCE_RECOUNT = 1.0  # seconds; run --once counts again at least this often
COUNTS_REFRESH = 60.0  # seconds; the counts of an idle daemon (other hosts' work shows late)
CANDIDATE_POLL = 0.1  # seconds between looks at files that are still settling
IDLE_TICK = 2.0  # seconds, at most, between turns of an idle main loop
PEER_STALE = 30.0  # seconds without a heartbeat: a peer no longer takes its backend's jobs
BEAT = 5.0  # seconds between heartbeats when systemd's watchdog asks for none more often
MAIN_STALL = 900.0  # seconds the main loop may spend in one turn (a scan of a large share)
SLICE = 32  # files admitted in one go while peers share the store (see ``_slices``)


@dataclass(frozen=True)
class Rebuilt:
    """What a reloaded config changes: new jobs' plans, timing, limits and the watcher."""

    settings: PipelineSettings
    planner: Planner
    limits: dict[str, int]
    watcher: Watcher


@dataclass
class Daemon:
    cfg: Config
    store: Store
    pipeline: Pipeline
    admitter: Admitter
    watcher: Watcher
    notifier: Notifier
    rebuild: Callable[[Config], Rebuilt]
    load_config: Callable[[], Config]
    clock: Callable[[], float] = time.time
    say: Callable[[str], None] = lambda _text: None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    reload_requested: threading.Event = field(default_factory=threading.Event)
    _workers_stop: threading.Event = field(default_factory=threading.Event)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    _unadmitted: list[Settled] = field(default_factory=list)
    _last_meta: dict[str, object] = field(default_factory=dict)
    _last_meta_at: float = 0.0
    _next_renew: float = 0.0
    _next_reap: float = 0.0
    _next_beat: float = 0.0
    # What the main loop saw at its last look (the keeper reports it): the watches' and
    # workers' health, each watch online or not, and when the loop last turned.
    _health: bool = True
    _watches: dict[str, bool] = field(default_factory=dict)
    _watch_notes: dict[str, str] = field(default_factory=dict)
    _turned_at: float = 0.0
    _keeper: threading.Thread | None = None
    _keeper_stop: threading.Event = field(default_factory=threading.Event)
    # Loops beside the stages (hook delivery, metrics), supervised like them (wiring.py).
    extras: dict[str, Callable[[threading.Event], None]] = field(default_factory=dict)
    # Loads what every file's screen runs on before READY=1 (wiring.py: Screener.warm).
    warm_up: Callable[[], None] = lambda: None
    _admitted: int = 0
    _last_activity: int = -1
    _counted_at: float = 0.0
    _status: str = ""
    _once: bool = False
    _once_activity: int = -1
    _once_counted_at: float = 0.0

    def request_stop(self) -> None:
        """For a signal handler: set the flag and wake the main loop, nothing more."""
        self.stop_requested.set()
        self.watcher.wake.set()

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.watcher.wake.set()

    def _sleep(self) -> None:
        """Until a watch event, a signal, the next heartbeat, or the next look at files that
        are settling (those are judged by their size and mtime over time): an idle daemon
        wakes about once a second, not ten times."""
        if self.watcher.backlog():
            return  # a scan's files are still being handed on: no pause between batches
        # --once ends when nothing is left: look often, so the exit follows the last job.
        busy = self.watcher.waiting() or self._once
        timeout = CANDIDATE_POLL if busy else IDLE_TICK
        timeout = min(timeout, max(0.0, self._next_beat - self.clock()))
        self.watcher.wake.wait(timeout)
        self.watcher.wake.clear()

    @property
    def owner(self) -> str:
        return self.pipeline.settings.owner

    def _start_worker(self, name: str) -> None:
        target = {"submit": self.pipeline.submit_loop, "poll": self.pipeline.poll_loop,
                  "finish": self.pipeline.finish_loop, **self.extras}[name]
        t = threading.Thread(target=target, args=(self._workers_stop,), name=name, daemon=True)
        t.start()
        self._threads[name] = t

    def _healthy(self) -> bool:
        """Replace dead workers and observers; healthy only if nothing had to be replaced."""
        ok = self.watcher.healthy()
        for name, t in list(self._threads.items()):
            if not t.is_alive():
                ok = False
                log.error("worker_died", worker=name)
                self._start_worker(name)
        return ok

    def _admit_all(self) -> None:
        """In batches, with a heartbeat between them: a first scan of a large library never
        keeps systemd's watchdog waiting."""
        settled = [*self._unadmitted, *self.watcher.tick()]
        self._unadmitted = []
        parts = [part for i in range(0, len(settled), BATCH)
                 for part in self._slices(settled[i:i + BATCH])]
        done = 0
        try:
            for part in parts:
                self._admitted += self.admitter.admit(part)
                done += 1
                self._turned_at = self.clock()
        except StoreUnavailable:  # kept for the next turn: the watcher hands a file on once
            self._unadmitted = [s for part in parts[done:] for s in part]
            raise

    def _slices(self, batch: Sequence[T]) -> list[Sequence[T]]:
        """A large batch in slices, this daemon's share first: every ``hosts``-th slice from
        its rank among the live daemons, then the others'. Daemons watching one folder find
        its new files together (a start after an outage, a folder copied in) and would each
        look at every file, its transcripts' names on disk included, only for all but one
        to learn at the store that it was queued meanwhile. Taken in this order they look at
        their own slices side by side, and find the others' already queued: one read of
        their versions a slice. Alone, or for a small batch: the batch as it is."""
        if len(batch) <= SLICE:
            return [batch]
        rank, hosts = self._rank()
        if hosts <= 1:
            return [batch]
        slices = [batch[i:i + SLICE] for i in range(0, len(batch), SLICE)]
        return [*slices[rank::hosts], *(s for i, s in enumerate(slices) if i % hosts != rank)]

    def _rank(self) -> tuple[int, int]:
        """This daemon's place among the live daemons of the store, and how many there are."""
        now = self.clock()
        live = [d.host_id for d in self.store.daemons() if now - d.heartbeat < PEER_STALE]
        return (live.index(self.owner), len(live)) if self.owner in live else (0, 1)

    def _status_line(self) -> str:
        c = self.store.counts()
        refused = self.pipeline.refused()
        paused = ""
        if refused is not None:
            paused = (" (out of credits: submitting paused)" if isinstance(
                refused, CreditsExhausted) else " (API key rejected: submitting paused)")
        if self.pipeline.store_error:
            paused += " (store unavailable: waiting)"
        return (f"{c['seen']} queued, {c['submitting'] + c['pending']} in flight, "
                f"{c['done']} done, {c['failed']} failed{paused}")

    def _keep_leases(self, now: float) -> None:
        lease = self.pipeline.settings.lease
        if now >= self._next_renew:
            self.store.renew(self.owner, now, lease)
            self._next_renew = now + lease / 4
        if now >= self._next_reap:
            taken = self.store.reap(self.owner, now, self.pipeline.poller.volatile)
            if any(taken.values()):
                log.warning("lease_taken_over", host=self.owner, **taken)
                self.pipeline.wake_all()
            self._replan(now)
            self._next_reap = now + max(2.0, lease / 8)  # a dead daemon's jobs wait ≤ 1.125 leases

    def _replan(self, now: float) -> None:
        """Queued jobs this run cannot send as planned get today's plan, unless a live peer
        builds their backend (it takes them)."""
        peers = {str(b.get("backend")) for d in self.store.daemons()
                 if d.host_id != self.owner and now - d.heartbeat < PEER_STALE
                 for b in d.info.get("backends", [])}
        self.pipeline.outcomes.replan_stranded(peers)

    def _maybe_look(self) -> None:
        """The main loop's share of the heartbeat: what only its thread may touch (the
        watcher's observers, the worker threads), looked at once a beat."""
        now = self.clock()
        self._turned_at = now
        if now >= self._next_beat:
            self._next_beat = now + self._beat()
            self._health = self._healthy()
            self._watches = self.watcher.watch_states()
            self._watch_notes = self.watcher.watch_notes()

    def _beat(self) -> float:
        return min(BEAT, self.notifier.watchdog_interval or BEAT,
                   self.pipeline.settings.lease / 4)

    def _keep(self, stop: threading.Event) -> None:
        """The keeper thread: leases and the heartbeat, whatever the main loop is doing."""
        while not stop.is_set():
            try:
                self._heartbeat()
            except Exception as exc:  # the keeper must outlive a bug in one beat
                log.exception("heartbeat_crashed", error=f"{type(exc).__name__}: {exc}")
            stop.wait(self._beat())

    def _start_keeper(self) -> None:
        self._turned_at = self.clock()
        self._keeper = threading.Thread(target=self._keep, args=(self._keeper_stop,),
                                        name="keeper", daemon=True)
        self._keeper.start()

    def _heartbeat(self) -> None:
        """Tell systemd and ``sttwatch status`` we are alive, and what we wait on."""
        now = self.clock()
        healthy = self._health and now - self._turned_at < MAIN_STALL
        try:
            self._keep_leases(now)
            # Counting every row is the costly part with a large library: only when this
            # daemon moved something, or every COUNTS_REFRESH for other hosts' work.
            activity = self.pipeline.activity() + self._admitted
            if activity != self._last_activity or now - self._counted_at >= COUNTS_REFRESH:
                self._status = self._status_line()
                self._last_activity, self._counted_at = activity, now
            status = self._status
            meta = {"healthy": healthy, "status": status, **self.pipeline.waiting_on(),
                    "watches": self._watches,
                    "watch_names": {w.key_name: str(w.path) for w in self.cfg.watches},
                    "watch_notes": self._watch_notes}  # polled, offline, hung
            # Only write when something changed, or often enough for ``status`` to tell a
            # live daemon from a dead one.
            if meta != self._last_meta or now - self._last_meta_at >= STATUS_REFRESH:
                self.store.heartbeat(self.owner, os.getpid(), socket.gethostname(), now, meta)
                self._last_meta, self._last_meta_at = meta, now
            if self.pipeline.store_error is not None:
                self.pipeline.store_trouble(None)
        except StoreUnavailable as exc:
            self.pipeline.store_trouble(exc)
            status = "store unavailable: waiting"
        if healthy:
            self.notifier.send(watchdog=1, status=status)

    def _unfinished(self) -> int:
        c = self.store.counts(UNFINISHED)
        return sum(c[state.value] for state in UNFINISHED)

    def reload(self) -> None:
        """SIGHUP: swap in a new config (watch folders, options, formats, timing) without
        touching any job on its way; a config that does not load is refused and the old one
        runs on."""
        self.notifier.send(reloading=1, monotonic_usec=time.monotonic_ns() // 1000)
        try:
            new = self.load_config()
            rebuilt = self.rebuild(new)
        except (ConfigError, BackendUnavailable) as exc:
            log.error("reload_refused", reason=str(exc), action="the old config stays")
            self.notifier.send(ready=1, status=self._status_line())
            return
        try:
            rebuilt.watcher.start()
        except OSError as exc:
            rebuilt.watcher.stop()
            log.error("reload_refused", reason=f"cannot watch: {exc}",
                      action="the old config stays")
            self.notifier.send(ready=1, status=self._status_line())
            return
        self.watcher.stop()
        self.watcher, self.cfg = rebuilt.watcher, new
        self.admitter.planner = rebuilt.planner
        self.admitter.output = new.output
        self.pipeline.reconfigure(rebuilt.settings, rebuilt.planner, new.output,
                                  rebuilt.limits)
        log.info("reloaded", watches=[str(w.path) for w in new.watches])
        self._say_conflicts()
        self._replan(self.clock())
        self.notifier.send(ready=1, status=self._status_line())

    def _say_conflicts(self) -> None:
        for folder, reason in self.admitter.planner.conflicts():
            log.error("plan_conflict", path=folder, reason=reason,
                      action="its files fail with this reason")
            self.say(f"  {folder}: {reason}; its files fail\n")

    def _announce(self, once: bool, recovered: dict[str, int]) -> None:
        planner = self.admitter.planner
        default = planner.default_backend
        model = self.pipeline.backends[default].model_name
        folders = [str(w.path) for w in self.cfg.watches]
        log.info("starting", host=self.owner, backend=default, model=model, watches=folders,
                 state=self.store.location, once=once, **recovered)
        where = ", ".join(folders)
        self.say(f"sttwatch is watching {where}\n"
                 f"  backend {default}, model {model}; state in {self.store.location}\n"
                 + ("  transcribing what is there, then exiting\n" if once else
                    f"  drop recordings into {folders[0]} ; Ctrl-C to stop\n"))
        self._say_conflicts()

    def _once_code(self) -> ExitCode | None:
        """Whether run --once is over: when nothing more can happen without time or an
        operator. Every ending leaves the jobs as they are for the next run."""
        refused = self.pipeline.refused()
        if refused is not None:
            return ExitCode.CREDITS if isinstance(refused, CreditsExhausted) else ExitCode.AUTH
        now, limit = self.clock(), self.cfg.daemon.once_timeout
        if self.pipeline.unreachable_for(now) > limit:
            log.error("service_unreachable", seconds=limit,
                      action="giving up (run --once); the jobs stay queued")
            return ExitCode.UNREACHABLE
        outcomes = self.pipeline.outcomes
        if outcomes.stuck_since is not None and now - outcomes.stuck_since > limit:
            log.error("stuck", reason=outcomes.stuck_reason, seconds=limit,
                      action="giving up (run --once); the jobs stay for the next run")
            return ExitCode.FAILED
        if self.watcher.waiting() or not self.watcher.hints.empty():
            return None
        # Counting every row ten times a second was a twelfth of a run's CPU: only when
        # this daemon moved something (its last job ending ends the run at once), or
        # every ONCE_RECOUNT for what it cannot see (another host's work, a file forgotten).
        activity = self.pipeline.activity() + self._admitted
        if activity == self._once_activity and now - self._once_counted_at < ONCE_RECOUNT:
            return None
        self._once_activity, self._once_counted_at = activity, now
        c = self.store.counts(UNFINISHED)  # the unfinished rows only, by the state index
        if not sum(c[state.value] for state in UNFINISHED):
            return ExitCode.FAILED if self.pipeline.failed_this_run else ExitCode.OK
        unfinished = sum(c[state.value] for state in UNFINISHED)
        elsewhere = self.store.waiting_for_backend(outcomes.planner.kinds)
        if elsewhere and sum(elsewhere.values()) >= unfinished:
            log.error("waiting_for_backend", backends=elsewhere,
                      action="stopping (run --once): this run does not build the backend "
                             "these tasks were sent to; they stay for a run that does")
            return ExitCode.FAILED
        resets = outcomes.budget_resets_at
        if resets is not None and resets > now and not any(
                c[s] for s in ("submitting", "pending", "fetched")):
            due = self.store.next_due(State.SEEN, self.pipeline.outcomes.planner.kinds)
            if due is None or due >= resets - 1.0:  # all that is left waits for the reset
                log.warning("budget_held", resets_at=resets, queued=c["seen"],
                            action="stopping (run --once); the rest waits for the reset")
                return ExitCode.BUDGET
        return None

    def run(self, *, once: bool = False) -> int:
        self._once = once
        now = self.clock()
        recovered = self.store.recover(self.owner, now, self.pipeline.settings.lease,
                                       self.pipeline.poller.volatile,
                                       self.admitter.planner.default_backend)
        self._announce(once, recovered)
        self._replan(now)
        self._start_keeper()
        for root in {self.cfg.output.dir or w.path for w in self.cfg.watches}:
            # issue 20: on the mount's worker, with a deadline: a hung share never stops start-up
            for path in self.watcher.guarded(root, functools.partial(
                    sweep_leftovers, root, 60.0, self.clock())):
                log.info("leftover_removed", path=str(path))
        if once:
            self.watcher.scan()
        else:
            self.watcher.start()
        if not once:  # a service's first file should not wait; a run --once may have none
            self.warm_up()
        for name in ("submit", "poll", "finish", *self.extras):
            self._start_worker(name)
        self._maybe_look()
        self.notifier.send(ready=1, status=self._status_line())
        next_rescan = self.clock() + self.cfg.daemon.rescan_seconds
        code: ExitCode = ExitCode.OK
        try:
            while not self.stop_requested.is_set():
                self._sleep()
                if self.stop_requested.is_set():
                    break
                try:
                    self._admit_all()
                except StoreUnavailable as exc:
                    self.pipeline.store_trouble(exc)
                now = self.clock()
                if not once and now >= next_rescan:
                    next_rescan = now + self.cfg.daemon.rescan_seconds
                    log.debug("rescan", files=self.watcher.scan())
                self._maybe_look()
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                if once:
                    try:
                        done = self._once_code()
                    except StoreUnavailable:
                        done = None
                    if done is not None:
                        code = done
                        break
            log.info("stop_requested" if self.stop_requested.is_set() else "finished")
        finally:
            self.shutdown()
        return code

    def shutdown(self) -> None:
        """Stop taking files, let in-flight transitions commit, and leave; pending ids are
        already in the store, so nothing waits on the service."""
        self.notifier.send(stopping=1)
        log.info("stopping", host=self.owner)
        self.watcher.stop()
        self._workers_stop.set()
        self.pipeline.stopping.set()  # a transition waiting for an absent store gives up
        self.pipeline.wake_all()
        # One deadline for every thread, inside the unit's TimeoutStopSec=30: an upload in
        # progress may finish; a store that does not answer does not hold the stop longer.
        deadline = time.monotonic() + 20.0
        for t in self._threads.values():
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=max(0.1, deadline - time.monotonic()))
        self.pipeline.close()
        counts: dict[str, int] = {}
        if self.pipeline.store_error is not None:  # each call would wait out its timeout
            log.warning("store_unavailable", error=self.pipeline.store_error,
                        action="stopping anyway; the lease hands the jobs on")
        else:
            try:
                counts = self.store.counts()
                self.store.leave(self.owner)
            except StoreUnavailable as exc:
                log.warning("store_unavailable", error=str(exc), action="stopping anyway")
        self.store.close()
        log.info("stopped", host=self.owner, **counts)
