"""What the daemon costs besides the service's own time: every row of issue 14, one run.

    python bench/overhead.py            # the full table (about 10 minutes on 2 cores)
    python bench/overhead.py --quick    # smaller N for a fast look (about 3 minutes)

The fake AI/ML API service (tests/fake_service.py) runs in this process; the daemon runs as a
real ``sttwatch run`` subprocess. CPU is the daemon's user+sys time: from ``os.wait4`` when it
exits, or ``/proc/<pid>/stat`` (utime+stime, 10 ms ticks) while it runs; idle windows sum
``/proc/<pid>/task/*/schedstat`` (nanoseconds) because their figures are a few ticks.
Parts, each with its own daemon:

* throughput: N recordings placed before start with an mtime a minute old (so the settle time
  does not apply), 2 s tasks, service limit 32, ``api.max_in_flight`` 32, ``run --once``:
  CPU per file, the span from the first create to the last transcript over the ideal bound
  ceil(N/32) x 2 s, and creates+fetches per file from the fake's records;
* pickup: a running daemon at the default settle time; files renamed in from an unwatched
  folder, and files written in place, one at a time; each to its create at the fake;
* library: ``--done`` recordings, each with its transcript, recorded as done in the state
  file beforehand (``Store.admit`` with a done note: rows without results); a file renamed in
  at READY=1 (a stand-in ``NOTIFY_SOCKET``) to its create; start-up CPU and peak RSS; idle CPU
  with no rescan; then a second daemon with a short ``daemon.rescan_seconds`` for the CPU of
  each rescan (its window's CPU minus the idle rate);
* idle with nothing to watch;
* state file: ``--state-jobs`` jobs written through the store API (admit, claim_submit,
  set_pending, set_fetched, mark_done) each with a Deepgram-shaped 1,000-word result.

The provider example (one file at a time, a poll every 10 s) is computed for 20 files on the
same 2 s tasks, as bench/daemon_throughput.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fake_service import (  # noqa: E402
    MAGIC,
    FakeConfig,
    FakeService,
    _Task,
    make_fake_audio,
    result_payload,
)
from multi_host import compiled  # noqa: E402

from sttwatch.search.indexer import index_result  # noqa: E402
from sttwatch.store import Admission, Plan  # noqa: E402
from sttwatch.store.sqlite import SqliteStore  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
KEY_ENV = "STTWATCH_BENCH_KEY"
TICK = os.sysconf("SC_CLK_TCK")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "meeting", "budget", "quarter", "customer", "review")
DEFAULT_SETTLE = 2.0  # daemon.settle_seconds as shipped
PER_FOLDER = 1000


# --- the daemon process ------------------------------------------------------------------------

def cpu_ticks(pid: int) -> float:
    """utime+stime in seconds (threads that exited included)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_precise(pid: int) -> float:
    """CPU seconds of the live threads, in nanoseconds' resolution."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total / 1e9


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_config(root: Path, base_url: str, *, settle: float = DEFAULT_SETTLE,
                 rescan: float = 300.0, max_in_flight: int = 32, level: str = "info") -> Path:
    cfg: dict[str, Any] = {
        "backend": "aimlapi",
        "api": {"base_url": base_url, "api_key_env": KEY_ENV, "max_in_flight": max_in_flight},
        "watch": [{"path": str(root / "inbox")}],
        "state": {"path": str(root / "state" / "sttwatch.db")},
        "daemon": {"settle_seconds": settle, "rescan_seconds": rescan},
        "log": {"format": "json", "level": level},
    }
    (root / "inbox").mkdir(exist_ok=True)
    path = root / "sttwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Daemon:
    """``sttwatch run`` as a child; stopped with SIGTERM and reaped with ``os.wait4``."""

    def __init__(self, config: Path, *, once: bool = False, notify: str | None = None) -> None:
        self.log = config.parent / "daemon.log"
        env = {**os.environ, KEY_ENV: KEY}
        if notify:
            env["NOTIFY_SOCKET"] = notify
        compiled()  # as installed: bytecode written once, not compiled at each start
        cmd = [sys.executable, "-m", "sttwatch", "run", "--config", str(config)]
        with self.log.open("ab") as fh:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(cmd + (["--once"] if once else []), stdout=fh,
                                         stderr=fh, env=env)
        self.pid = self.proc.pid
        self.rusage: Any = None

    def cpu(self) -> float:
        return cpu_ticks(self.pid)

    def reap(self, timeout: float = 900) -> int:
        """Wait for exit (SIGKILL after ``timeout``); keeps the rusage."""
        def kill() -> None:
            print(f"  WARNING: daemon {self.pid} still running after {timeout:.0f} s: SIGKILL "
                  f"(figures of this part are suspect)", flush=True)
            os.kill(self.pid, signal.SIGKILL)

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            _, status, self.rusage = os.wait4(self.pid, 0)
        finally:
            killer.cancel()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode

    def stop(self) -> int:
        if self.proc.returncode is None:
            os.kill(self.pid, signal.SIGTERM)
            return self.reap(60)
        return self.proc.returncode

    @property
    def total_cpu(self) -> float:
        return float(self.rusage.ru_utime + self.rusage.ru_stime)

    @property
    def maxrss_mb(self) -> float:
        return float(self.rusage.ru_maxrss) / 1024

    def events(self, name: str | None = None, start: int = 0) -> list[dict[str, Any]]:
        with self.log.open("rb") as fh:
            fh.seek(start)
            lines = fh.read().decode("utf-8", "replace").splitlines()
        out = [json.loads(x) for x in lines if x.startswith("{")]
        return [e for e in out if name is None or e.get("event") == name]

    def tail_note(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return " | ".join(lines[-3:])


class NotifyReader:
    """A stand-in for systemd's notify socket that reads every datagram as systemd does: the
    kernel queues only ``net.unix.max_dgram_qlen`` (10) unread ones, and after that the
    daemon's next send blocks its main loop."""

    def __init__(self, root: Path) -> None:
        self.path = str(root / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.ready: list[float] = []  # monotonic arrival of each READY=1
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages += 1
            if "READY=1" in msg:
                self.ready.append(time.monotonic())

    def wait_ready(self, d: Daemon, limit: float) -> float:
        """Monotonic time the first READY=1 arrived."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.ready:
                return self.ready[0]
            if d.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {d.proc.returncode}: {d.tail_note()}")
            time.sleep(0.001)
        raise RuntimeError(f"no READY=1 within {limit:.0f} s: {d.tail_note()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def notify_socket(root: Path) -> Iterator[NotifyReader]:
    reader = NotifyReader(root)
    try:
        yield reader
    finally:
        reader.close()


def wait_idle(pid: int, limit: float, window: float = 2.0, quiet: float = 0.04) -> float:
    """Monotonic time the process first spent at most ``quiet`` CPU seconds in ``window``."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples.append((now, cpu_ticks(pid)))
        old = [s for s in samples if now - s[0] >= window]
        if old and samples[-1][1] - old[-1][1] <= quiet:
            return now
        time.sleep(0.25)
    raise RuntimeError(f"daemon {pid} not idle within {limit:.0f} s")


def wait_create(svc: FakeService, text: str, limit: float = 30.0) -> float:
    """Arrival time (monotonic, the fake's clock) of the create carrying ``text``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for r in reversed(svc.creates()):
            if r.text == text:
                return r.time
        time.sleep(0.005)
    return math.inf


def recording_text(i: int, words: int = 8) -> str:
    return f"recording {i} " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))


def iso_to_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- the parts ---------------------------------------------------------------------------------

@dataclass
class Figures:
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)


def throughput(f: Figures, tmp: Path, n: int, task: float, limit: int) -> None:
    print(f"[throughput] {n} files, {task:g} s tasks, limit {limit}", flush=True)
    fake = FakeConfig(key=KEY, task_seconds=task, concurrency=limit)
    # The fixed cost of a run: an empty --once (imports, store, exit).
    empty = tmp / "empty-once"
    empty.mkdir()
    with FakeService(FakeConfig(key=KEY)) as svc:
        d = Daemon(write_config(empty, svc.base_url), once=True)
        d.reap()
    f.values["once_fixed_cpu"] = d.total_cpu
    root = tmp / "throughput"
    root.mkdir()
    with FakeService(fake) as svc:
        cfg = write_config(root, svc.base_url, max_in_flight=limit)
        past = time.time() - 60
        for i in range(n):
            p = make_fake_audio(root / "inbox" / f"rec{i:05d}.mp3", recording_text(i))
            os.utime(p, (past, past))
        offset = time.time() - time.monotonic()
        d = Daemon(cfg, once=True)
        code = d.reap()
        wall = time.monotonic() - d.started
        done = d.events("done")
        last = 0.0
        for e in done:
            outs = [Path(o) for o in e.get("outputs") or ()]
            txt = outs[0] if outs else Path(e["path"]).with_suffix(".txt")
            if txt.exists():
                last = max(last, txt.stat().st_mtime_ns / 1e9)
        creates, fetches = svc.creates(), svc.fetches()
        late = [iso_to_epoch(e["timestamp"]) - (fin + offset) for e in done
                if (fin := svc.finished_at(e["generation_id"])) is not None]
        gaps = slot_gaps(svc, limit)
    ideal = math.ceil(n / limit) * task
    span = last - (creates[0].time + offset) if creates and last else math.nan
    f.values.update(cpu_per_file=d.total_cpu / n, ratio=span / ideal, wall_ratio=wall / ideal,
                    requests=(len(creates) + len(fetches)) / n, wall_per_file=wall / n)
    f.note(f"exit {code}, {len(done)}/{n} done; daemon CPU {d.total_cpu:.2f} s "
           f"(user {d.rusage.ru_utime:.2f}, sys {d.rusage.ru_stime:.2f}; an empty --once "
           f"costs {f.values['once_fixed_cpu']:.2f} s), peak RSS {d.maxrss_mb:.0f} MB")
    f.note(f"ideal {ideal:.0f} s; first create -> last transcript {span:.2f} s "
           f"= {span / ideal:.3f}x; launch -> exit {wall:.2f} s = {wall / ideal:.3f}x")
    f.note(f"creates {len(creates)}, fetches {len(fetches)}; service finished -> done event "
           f"{describe(late)}")
    if gaps[0]:
        f.note(f"a freed slot to its next create: {describe(gaps[0], ms=True)}; of it, the "
               f"task's finish -> the fetch that saw it {describe(gaps[1], ms=True)}, that "
               f"fetch -> the next create {describe(gaps[2], ms=True)}; the first {limit} "
               f"creates took {gaps[3] * 1000:.0f} ms")
    if code != 0 or len(done) != n:
        f.note(f"WARNING: not every file finished cleanly: {d.tail_note()}")


def slot_gaps(svc: FakeService, limit: int) -> tuple[list[float], list[float], list[float],
                                                     float]:
    """Where a round's overhead goes, from the fake's own clock: the i-th create after the
    first ``limit`` took the slot of the (i - limit)-th task to finish; its gap splits into
    the wait for a fetch to see the finish and the time from that fetch to the create."""
    creates = sorted(r.time for r in svc.creates() if r.status_code < 300)
    seen: dict[str, float] = {}
    for r in svc.fetches():
        fin = svc.finished_at(r.generation_id or "")
        if fin is not None and r.time >= fin and r.generation_id not in seen:
            seen[r.generation_id or ""] = r.time
    ends = sorted((fin, seen.get(g, fin)) for g in seen
                  if (fin := svc.finished_at(g)) is not None)
    slot, fetch, after = [], [], []
    for i in range(limit, min(len(creates), len(ends) + limit)):
        fin, saw = ends[i - limit]
        slot.append(creates[i] - fin)
        fetch.append(saw - fin)
        after.append(creates[i] - saw)
    burst = creates[limit - 1] - creates[0] if len(creates) >= limit else math.nan
    return slot, fetch, after, burst


def pickup(f: Figures, tmp: Path, runs: int) -> None:
    print(f"[pickup] {runs} renamed in + {runs} written in place, settle "
          f"{DEFAULT_SETTLE:g} s", flush=True)
    root = tmp / "pickup"
    root.mkdir()
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    moved: list[float] = []
    closed: list[float] = []
    with FakeService(FakeConfig(key=KEY, task_seconds=0.2)) as svc, \
            notify_socket(root) as notify:
        d = Daemon(write_config(root, svc.base_url), notify=notify.path)
        try:
            notify.wait_ready(d, 120)
            wait_idle(d.pid, 60)
            for i in range(runs):
                text = f"moved in {i}"
                src = make_fake_audio(elsewhere / f"m{i:03d}.mp3", text)
                t0 = time.monotonic()
                os.rename(src, root / "inbox" / src.name)
                moved.append(wait_create(svc, text) - t0)
                text = f"written in place {i}"
                with (root / "inbox" / f"w{i:03d}.mp3").open("wb") as fh:
                    fh.write(MAGIC + text.encode())
                t0 = time.monotonic()  # the close happened as the block ended
                closed.append(wait_create(svc, text) - t0)
        finally:
            d.stop()
    f.values.update(moved=statistics.median(moved), closed=statistics.median(closed))
    for label, got in (("renamed", moved), ("written", closed)):
        if missed := [i for i, x in enumerate(got) if math.isinf(x)]:
            f.note(f"WARNING: {label} files {missed} got no create within 30 s (daemon log: "
                   f"{d.log})")
    f.note(f"renamed in -> create: {describe(moved, ms=True)}")
    f.note(f"written in place, closed -> create: {describe(closed, ms=True)}")


def build_library(root: Path, n: int) -> Path:
    """``n`` recordings with transcripts newer than them, and a state file that knows each as
    done; returns the inbox."""
    inbox = (root / "inbox").resolve()
    t0 = time.monotonic()
    rec_time, txt_time = time.time() - 86400, time.time() - 3600
    rows: list[tuple[str, int, int]] = []
    for i in range(n):
        folder = inbox / f"d{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        rec = folder / f"r{i:06d}.mp3"
        rec.write_bytes(MAGIC + recording_text(i).encode())
        os.utime(rec, (rec_time, rec_time))
        txt = folder / f"r{i:06d}.txt"
        txt.write_text(recording_text(i) + "\n")
        os.utime(txt, (txt_time, txt_time))
        st = rec.stat()
        rows.append((str(rec), st.st_size, st.st_mtime_ns))
    made = time.monotonic() - t0
    store = SqliteStore(root / "state" / "sttwatch.db")
    plan = Plan("aimlapi", "#g1_whisper-tiny", {}, ("txt",), str(inbox))
    try:
        for i in range(0, n, 5000):
            store.admit([Admission(p, s, m, plan, (), "transcript already up to date")
                         for p, s, m in rows[i:i + 5000]], time.time())
        counts = store.counts()
    finally:
        store.close()
    print(f"  built {n} recordings + transcripts in {made:.1f} s, state rows in "
          f"{time.monotonic() - t0 - made:.1f} s: {counts}", flush=True)
    return inbox


def library(f: Figures, tmp: Path, n: int, idle_seconds: float, rescans: int) -> None:
    print(f"[library] {n} done files; idle window {idle_seconds:g} s; {rescans} rescan(s)",
          flush=True)
    root = tmp / "library"
    root.mkdir()
    inbox = build_library(root, n)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    with FakeService(FakeConfig(key=KEY, task_seconds=0.2)) as svc:
        # Daemon A: no rescan. Start-up, the file dropped at READY, idle, peak RSS.
        cfg = write_config(root, svc.base_url, rescan=86400)
        drop = make_fake_audio(elsewhere / "dropped.mp3", "dropped at ready")
        with notify_socket(root) as notify:
            d = Daemon(cfg, notify=notify.path)
            try:
                ready = notify.wait_ready(d, 900)
                cpu_ready = d.cpu()
                os.rename(drop, inbox / drop.name)
                created = wait_create(svc, "dropped at ready", 900)
                idle_at = wait_idle(d.pid, 900)
                cpu_idle = d.cpu()
                c0, t0 = cpu_precise(d.pid), time.monotonic()
                time.sleep(idle_seconds)
                c1, t1 = cpu_precise(d.pid), time.monotonic()
                hwm = vm_hwm_mb(d.pid)
            finally:
                d.stop()
        idle_rate = (c1 - c0) / (t1 - t0) * 60
        startup_wall = idle_at - d.started
        unexpected = [e for e in d.events() if e.get("event") in ("queued", "already_transcribed")
                      and not str(e.get("path", "")).endswith("dropped.mp3")]
        f.values.update(drop_at_ready=created - ready, startup_cpu=cpu_idle,
                        startup_rss=d.maxrss_mb, idle_library=idle_rate)
        f.note(f"READY after {ready - d.started:.2f} s wall, {cpu_ready:.2f} s CPU; idle after "
               f"{startup_wall:.1f} s wall, {cpu_idle:.2f} s CPU; dropped at READY -> create "
               f"{created - ready:.2f} s")
        f.note(f"peak RSS {d.maxrss_mb:.0f} MB (VmHWM before stop {hwm:.0f} MB); idle "
               f"{c1 - c0:.3f} s CPU in {t1 - t0:.1f} s; creates {len(svc.creates())} "
               f"(1 expected)")
        if unexpected or len(svc.creates()) != 1:
            f.note(f"WARNING: the daemon did not take the prebuilt rows as known: "
                   f"{len(unexpected)} queued/already_transcribed events")

        # Daemon B: rescans far enough apart that the daemon is idle between them.
        period = max(20.0, 1.5 * startup_wall + 10)
        cfg = write_config(root, svc.base_url, rescan=period, level="debug")
        d = Daemon(cfg)
        try:
            wait_idle(d.pid, 900)
            mark = d.log.stat().st_size
            c0, t0 = d.cpu(), time.monotonic()
            deadline = t0 + (rescans + 1) * period + 900
            while len(d.events("rescan", mark)) < rescans and time.monotonic() < deadline:
                time.sleep(0.5)
            wait_idle(d.pid, 900)
            c1, t1 = d.cpu(), time.monotonic()
            seen = len(d.events("rescan", mark))
        finally:
            d.stop()
    spent = (c1 - c0) - idle_rate / 60 * (t1 - t0)
    f.values["rescan_cpu"] = spent / max(seen, 1)
    f.note(f"rescan_seconds {period:.0f}: {seen} rescan(s) in {t1 - t0:.1f} s, {c1 - c0:.2f} s "
           f"CPU, less idle {idle_rate / 60 * (t1 - t0):.2f} s -> {spent / max(seen, 1):.2f} s "
           f"a rescan ({spent / max(seen, 1) * 60 / 300:.2f} s a minute at the 300 s default)")


def idle_empty(f: Figures, tmp: Path, idle_seconds: float) -> None:
    print(f"[idle] nothing to watch, {idle_seconds:g} s", flush=True)
    root = tmp / "idle"
    root.mkdir()
    with FakeService(FakeConfig(key=KEY)) as svc:
        d = Daemon(write_config(root, svc.base_url))
        try:
            wait_idle(d.pid, 120)
            c0, t0 = cpu_precise(d.pid), time.monotonic()
            time.sleep(idle_seconds)
            c1, t1 = cpu_precise(d.pid), time.monotonic()
        finally:
            d.stop()
    f.values["idle_empty"] = (c1 - c0) / (t1 - t0) * 60
    f.note(f"{c1 - c0:.3f} s CPU in {t1 - t0:.1f} s")


def thousand_word_result(i: int, words: int = 1000) -> dict[str, Any]:
    rng = random.Random(i)
    toks = []
    for k in range(words):
        w = rng.choice(WORDS)
        toks.append(w.capitalize() if k % 12 == 0 else w + ("." if k % 12 == 11 else ""))
    task = _Task(f"gen-{i:06d}-0000-0000-0000-000000000000", " ".join(toks), None,
                 {"model": "#g1_nova-2"}, f"{i:064x}", 0.0, "2025-01-01T00:00:00.000+00:00")
    return result_payload(task, "deepgram")


def state_size(f: Figures, jobs: int, scale: int) -> None:
    """The state file as the store keeps it, then with the search index the daemon keeps
    beside it (docs/search.md): both rows, so neither hides the other."""
    _state_size(f, jobs, scale, False)
    _state_size(f, jobs, scale, True)


def _state_size(f: Figures, jobs: int, scale: int, indexed: bool) -> None:
    what = " and their search entries" if indexed else ""
    print(f"[state] {jobs} jobs with 1,000-word results{what} through the store API",
          flush=True)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # size only: no disk wait
    with tempfile.TemporaryDirectory(prefix="sttwatch-state-", dir=base) as tmp:
        db = Path(tmp) / "sttwatch.db"
        store = SqliteStore(db)
        plan = Plan("aimlapi", "#g1_nova-2", {}, ("txt", "json"), "/library")
        t0 = time.monotonic()
        results = [thousand_word_result(i) for i in range(16)]  # built once: the store's cost
        sample = len(json.dumps(results[0]))
        try:
            for start in range(0, jobs, 500):
                now = time.time()
                store.admit([Admission(f"/library/r{i:06d}.mp3", 1 << 20, 10**18 + i, plan,
                                       (f"/library/r{i:06d}.{{format}}",))
                             for i in range(start, min(jobs, start + 500))], now)
            for i in range(jobs):
                now = time.time()
                job = store.claim_submit("bench", now, 60, ["aimlapi"])
                assert job is not None
                job = store.set_pending(job, f"gen-{i:06d}", now, now + 1,
                                        {"x-aimlapi-credits-used": "2100"}, f"{i:064x}")
                assert job is not None
                job = store.set_fetched(job, results[i % len(results)], now, 2.0)
                assert job is not None
                store.mark_done(job, now, index=index_result(store, job, plan)
                                if indexed else None)
        finally:
            store.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    f.values["state_indexed_mb" if indexed else "state_mb"] = size * scale / 1e6
    f.note(("with the search index: " if indexed else "")
           + f"{jobs} jobs in {time.monotonic() - t0:.1f} s; {size / 1e6:.1f} MB on disk (state "
           f"file + WAL){f', x{scale} = {size * scale / 1e6:.0f} MB' if scale > 1 else ''}; one "
           f"result is {sample / 1e3:.0f} kB of JSON")


# --- the table ---------------------------------------------------------------------------------

def describe(values: list[float], ms: bool = False) -> str:
    if not values:
        return "n/a"
    q = sorted(values)
    k, unit = (1000, "ms") if ms else (1, "s")
    p95 = q[min(len(q) - 1, math.ceil(0.95 * len(q)) - 1)]
    return (f"p50 {statistics.median(q) * k:.{0 if ms else 3}f} {unit}, p95 "
            f"{p95 * k:.{0 if ms else 3}f} {unit}, max {q[-1] * k:.{0 if ms else 3}f} {unit} "
            f"(n={len(q)})")


@dataclass(frozen=True)
class Row:
    figure: str
    goal: str
    key: str
    limit: float
    show: Callable[[dict[str, Any]], str]
    le: bool = False  # goal is "<= limit" rather than "< limit"


def rows(a: argparse.Namespace) -> list[Row]:
    n, done = f"{a.files:,}", f"{a.done:,}"
    return [
        Row(f"daemon CPU per file (user+sys), {n} files", "< 5 ms", "cpu_per_file", 0.005,
            lambda v: f"{v['cpu_per_file'] * 1000:.1f} ms"),
        Row(f"first create -> last transcript / ideal bound, {n} files, limit 32",
            "<= 1.05x", "ratio", 1.05,
            lambda v: f"{v['ratio']:.3f}x (launch -> exit {v['wall_ratio']:.3f}x)", le=True),
        Row("requests per file (creates + fetches)", "<= 3", "requests", 3.0,
            lambda v: f"{v['requests']:.2f}", le=True),
        Row("pickup: renamed in from another folder -> its create", "p50 < 100 ms", "moved",
            0.1, lambda v: f"p50 {v['moved'] * 1000:,.0f} ms"),
        Row("pickup: written in place and closed -> its create", "p50 < 100 ms", "closed",
            0.1, lambda v: f"p50 {v['closed'] * 1000:,.0f} ms"),
        Row(f"{done} done files: a file dropped at READY -> its create", "< 2 s",
            "drop_at_ready", 2.0, lambda v: f"{v['drop_at_ready']:.2f} s"),
        Row(f"{done} done files: start-up CPU (to idle)", "< 3 s", "startup_cpu", 3.0,
            lambda v: f"{v['startup_cpu']:.2f} s"),
        Row(f"{done} done files: peak RSS", "< 150 MB", "startup_rss", 150.0,
            lambda v: f"{v['startup_rss']:.0f} MB"),
        Row(f"each rescan of {done} files", "< 1 s CPU", "rescan_cpu", 1.0,
            lambda v: f"{v['rescan_cpu']:.2f} s"),
        Row(f"idle, {done} done files, no rescan", "< 0.1 s CPU a minute", "idle_library",
            0.1, lambda v: f"{v['idle_library']:.3f} s/min"),
        Row("idle, nothing at all", "< 0.05 s CPU a minute", "idle_empty", 0.05,
            lambda v: f"{v['idle_empty']:.3f} s/min"),
        Row(f"state file, {a.state_jobs * a.state_scale:,} jobs with 1,000-word results",
            "< 50 MB", "state_mb", 50.0, lambda v: f"{v['state_mb']:,.0f} MB"),
    ]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy() -> tuple[int, int]:
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="200 files, 10,000 done files, 10 pickups, 10 s idle windows, 1,000 "
                        "state jobs (x10)")
    p.add_argument("--only", default="throughput,pickup,library,idle,state",
                   help="comma-separated parts to run (default: all)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary folders (daemon logs, state files) and print where")
    a = p.parse_args(argv)
    a.files, a.done, a.pickups, a.idle_seconds, a.rescans, a.state_jobs, a.state_scale = (
        (200, 10_000, 10, 10.0, 1, 1_000, 10) if a.quick else
        (1_000, 100_000, 20, 30.0, 2, 10_000, 1))
    task, limit = 2.0, 32
    parts = set(a.only.split(","))
    cores = os.cpu_count()
    print(f"overhead bench: {'quick' if a.quick else 'full'}; {cores} cores; load average "
          f"{loadavg()} at start", flush=True)
    f = Figures()
    b0 = busy()
    tmp = Path(tempfile.mkdtemp(prefix="sttwatch-overhead-"))
    if a.keep:
        print(f"keeping {tmp}")
    try:
        if "throughput" in parts:
            throughput(f, tmp, a.files, task, limit)
        if "pickup" in parts:
            pickup(f, tmp, a.pickups)
        if "library" in parts:
            library(f, tmp, a.done, a.idle_seconds, a.rescans)
        if "idle" in parts:
            idle_empty(f, tmp, a.idle_seconds)
        if "state" in parts:
            state_size(f, a.state_jobs, a.state_scale)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    b1 = busy()
    share = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
    print()
    print("| figure | goal | measured | ok? |")
    print("|---|---|---|---|")
    for r in rows(a):
        if r.key not in f.values:
            continue
        v = f.values[r.key]
        ok = (v <= r.limit) if r.le else (v < r.limit)
        print(f"| {r.figure} | {r.goal} | {r.show(f.values)} | {'yes' if ok else 'NO'} |")
    if "wall_per_file" in f.values:
        example = 20 * math.ceil(task / 10) * 10
        print(f"| baseline: the provider's example, 20 files (one at a time, a poll every "
              f"10 s) | - | {example:.0f} s = {example / 20:.0f} s a file; this daemon "
              f"{f.values['wall_per_file'] * 1000:.0f} ms a file "
              f"({example / 20 / f.values['wall_per_file']:.0f}x faster) | - |")
    print()
    print(f"machine: {cores} cores, all of them {share:.0%} busy during the run (this bench, "
          f"its daemons and everyone else); load average {loadavg()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
