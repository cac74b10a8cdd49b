"""Several daemons on one PostgreSQL store against the fake AI/ML API service.

The fake service (tests/fake_service.py) runs in this process with ``task_seconds`` T and a
concurrency limit L; N fake recordings are written to one temporary inbox that every daemon
watches. Each daemon is a real ``sttwatch run`` subprocess with its own ``daemon.host_id``;
the bench waits until every transcript is on disk, then stops the daemons with SIGTERM and
reaps each with ``os.wait4`` for its CPU time. Runs: PostgreSQL with 1, 2, 3 and 4 daemons,
and the SQLite store with 1 daemon. Reported per run:

* files per second, launch of the first daemon to the last transcript written (file mtime),
  and that wall time next to the ideal bound ceil(N/L) x T; also the span from the first
  create reaching the service to the last transcript (the wall time less daemon start-up);
* creates per file (from the fake's request records) and each daemon's share of the work;
* store round trips per file, PostgreSQL only: the store lives in a database of its own made
  for the run, and the count is the ``xact_commit`` delta of ``pg_stat_database`` for it
  (transactions, read from another database after the daemons have disconnected, so the
  bench's own reads are not in it); statements per file would need ``pg_stat_statements``,
  which must be preloaded by the server and usually is not. SQLite gives no such counter
  from outside the daemon, so it has none;
* daemon CPU seconds per file: user + sys of every daemon process, summed; and the same
  after start-up: less each daemon's CPU at its first READY=1 (its own ``NOTIFY_SOCKET``);
  and between READY=1 and the stop: each daemon's CPU read from ``/proc`` just before its
  SIGTERM, less that at READY=1 (start-up and shutdown are paid once a daemon, not a file);
* PostgreSQL's own CPU per file: user + sys of the server processes serving the run's
  database (``pg_stat_activity``), read from ``/proc`` every half second while they live,
  so only when the server runs on this machine; the shared background processes (WAL
  writer, checkpointer, autovacuum) are not in it.

``api.max_in_flight`` is split so the daemons together keep at most L tasks in flight
(``--in-flight split``, the default: 32 -> 32 / 16+16 / 11+11+10), or each daemon gets L
(``--in-flight each``), in which case the service's own limit is what holds them back.

Run:  python bench/multi_host.py [--files 300] [--task-seconds 2] [--concurrency 32]
      [--in-flight split|each] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fake_service import FakeConfig, FakeService, make_fake_audio  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
KEY_ENV = "STTWATCH_BENCH_KEY"
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima")


@dataclass(frozen=True)
class RunResult:
    label: str
    daemons: int
    in_flight: tuple[int, ...]
    wall: float  # first launch -> last transcript mtime
    span: float | None  # first create on the service -> last transcript mtime
    done: int
    creates: int
    max_running: int
    shares: tuple[int, ...]  # "submitted" events per daemon
    cpu: float  # user + sys, all daemons
    exit_codes: tuple[int, ...]
    xacts: int | None  # PostgreSQL transactions during the run
    pg_cpu: float | None = None  # the run's server processes, user + sys
    ready_cpu: float | None = None  # every daemon's CPU at its first READY=1, summed
    stop_cpu: float | None = None  # every daemon's CPU just before its SIGTERM, summed


def compiled() -> None:
    """The package's bytecode written before a daemon starts, as pip writes it when it
    installs sttwatch: with ``PYTHONDONTWRITEBYTECODE`` set (the test machine sets it) each
    daemon started from a checkout compiled every module of sttwatch again (0.3 s of CPU
    a start on 2 slow cores), which no installed daemon does. bench/overhead.py uses it too."""
    compileall.compile_dir(str(ROOT / "sttwatch"), quiet=1)


class ReadyCpu:
    """Each daemon's CPU when it says READY=1 (its own notify socket, read on a thread as
    systemd reads it): what start-up cost, apart from what the files cost after it."""

    def __init__(self, root: Path, daemons: int) -> None:
        self.paths = [str(root / f"notify-{i}.sock") for i in range(daemons)]
        self.socks = []
        for path in self.paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            self.socks.append(sock)
        self.pids: list[int | None] = [None] * daemons
        self.cpu: list[float | None] = [None] * daemons
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.2)
            for sock in ready:
                i = self.socks.index(sock)
                msg = sock.recv(4096)
                pid = self.pids[i]
                if b"READY=1" in msg and self.cpu[i] is None and pid is not None:
                    try:
                        with open(f"/proc/{pid}/stat") as fh:
                            fields = fh.read().rsplit(")", 1)[1].split()
                        self.cpu[i] = (int(fields[11]) + int(fields[12])) / tick
                    except OSError:
                        pass

    def total(self) -> float | None:
        return None if any(c is None for c in self.cpu) else sum(c or 0.0 for c in self.cpu)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self.socks:
            sock.close()


def cpu_of(pid: int) -> float | None:
    """A live process's CPU seconds so far (user + sys), from ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def split_in_flight(total: int, daemons: int, mode: str) -> tuple[int, ...]:
    if mode == "each":
        return (total,) * daemons
    return tuple(total // daemons + (1 if i < total % daemons else 0) for i in range(daemons))


def db_url(base: str, dbname: str) -> str:
    """``base`` with its database name replaced (query string kept)."""
    head, sep, query = base.partition("?")
    return head.rsplit("/", 1)[0] + "/" + dbname + (sep + query if sep else "")


def xact_commit(admin_url: str, dbname: str) -> int:
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                           (dbname,)).fetchone()
    return int(row[0]) if row else 0


def backend_cpu(admin_url: str, dbname: str, seen: dict[int, float]) -> None:
    """Update ``seen`` (server pid -> CPU seconds so far) for the backends of ``dbname``."""
    import psycopg
    tick = os.sysconf("SC_CLK_TCK")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        pids = [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)).fetchall()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # another machine's server, or the backend just ended
            continue
        seen[pid] = (int(fields[11]) + int(fields[12])) / tick


def settle_stats(admin_url: str, dbname: str, timeout: float = 15.0) -> int:
    """The counter once it stops moving: a backend reports its counts when it ends, and
    the report may trail the disconnect by a moment."""
    deadline = time.monotonic() + timeout
    last = xact_commit(admin_url, dbname)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = xact_commit(admin_url, dbname)
        if now == last:
            return now
        last = now
    return last


def write_configs(root: Path, base_url: str, state: dict[str, str],
                  in_flight: tuple[int, ...], settle: float) -> list[Path]:
    paths = []
    for i, limit in enumerate(in_flight):
        cfg: dict[str, Any] = {
            "backend": "aimlapi",
            "api": {"base_url": base_url, "api_key_env": KEY_ENV, "max_in_flight": limit},
            "watch": [{"path": str(root / "inbox")}],
            "state": state,
            "daemon": {"settle_seconds": settle, "host_id": f"bench-{i}"},
            "log": {"format": "json", "level": "info"},
        }
        path = root / f"host-{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        paths.append(path)
    return paths


def last_written(paths: list[Path]) -> float | None:
    """Latest transcript mtime, or None while any is missing."""
    latest = 0.0
    for p in paths:
        try:
            latest = max(latest, p.stat().st_mtime_ns / 1e9)
        except FileNotFoundError:
            return None
    return latest


def run_once(args: argparse.Namespace, label: str, daemons: int, pg: bool) -> RunResult:
    compiled()
    fake_cfg = FakeConfig(key=KEY, task_seconds=args.task_seconds, concurrency=args.concurrency)
    dbname = f"sttwatch_bench_{uuid.uuid4().hex[:8]}"
    admin = args.pg
    if pg:
        import psycopg
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp, \
                FakeService(fake_cfg) as svc:
            root = Path(tmp)
            inbox = root / "inbox"
            inbox.mkdir()
            outputs = []
            for i in range(args.files):
                text = f"recording {i} " + " ".join(WORDS[(i + k) % len(WORDS)]
                                                    for k in range(8))
                make_fake_audio(inbox / f"rec{i:04d}.mp3", text)
                outputs.append(inbox / f"rec{i:04d}.txt")
            state = ({"url": db_url(admin, dbname)} if pg
                     else {"path": str(root / "state" / "sttwatch.db")})
            in_flight = split_in_flight(args.concurrency, daemons, args.in_flight)
            configs = write_configs(root, svc.base_url, state, in_flight, args.settle)
            before = xact_commit(admin, dbname) if pg else 0
            env = {**os.environ, KEY_ENV: KEY}
            procs: list[subprocess.Popen[bytes]] = []
            logs: list[Path] = []
            offset = time.time() - time.monotonic()  # the fake's clock -> file mtimes
            ready = ReadyCpu(root, daemons)
            launched = time.time()
            for i, cfg in enumerate(configs):
                log = root / f"host-{i}.log"
                logs.append(log)
                with log.open("wb") as fh:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "sttwatch", "run", "--config", str(cfg)],
                        stdout=fh, stderr=fh, env={**env, "NOTIFY_SOCKET": ready.paths[i]}))
                ready.pids[i] = procs[-1].pid
            deadline = time.monotonic() + args.timeout
            finished = None
            server: dict[int, float] = {}
            next_look = 0.0
            while time.monotonic() < deadline:
                finished = last_written(outputs)
                if finished is not None or any(p.poll() is not None for p in procs):
                    break
                if pg and time.monotonic() >= next_look:
                    backend_cpu(admin, dbname, server)
                    next_look = time.monotonic() + 0.5
                time.sleep(0.2)
            if finished is None:
                finished = time.time()
            # Let every daemon record its last transitions before stopping it.
            time.sleep(args.grace)
            if pg:
                backend_cpu(admin, dbname, server)
            ready.close()
            # Before the stop: what each daemon spent on the files, without its shutdown
            # (the interpreter's own teardown is a tenth of a second a process).
            at_stop = [cpu_of(p.pid) if p.returncode is None else None for p in procs]
            cpu = 0.0
            codes = []
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                codes.append(p.returncode)
                cpu += usage.ru_utime + usage.ru_stime
            shares = []
            for log, code in zip(logs, codes, strict=True):
                events = [json.loads(line) for line in log.read_text().splitlines()
                          if line.startswith("{")]
                shares.append(sum(1 for e in events if e.get("event") == "submitted"))
                if code != 0:
                    print(f"  {log.name}: exit {code}; last lines:",
                          *log.read_text().splitlines()[-3:], sep="\n    ")
            xacts = settle_stats(admin, dbname) - before if pg else None
            done = sum(1 for o in outputs if o.exists())
            creates = svc.creates()
            span = finished - (creates[0].time + offset) if creates else None
            return RunResult(label, daemons, in_flight, finished - launched, span, done,
                             len(creates), svc.max_running_seen, tuple(shares), cpu,
                             tuple(codes), xacts, sum(server.values()) if server else None,
                             ready.total(),
                             None if any(c is None for c in at_stop) else
                             sum(c or 0.0 for c in at_stop))
    finally:
        if pg:
            import psycopg
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=300, help="N recordings (default 300)")
    p.add_argument("--task-seconds", type=float, default=2.0, help="T per task (default 2)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="L tasks the service runs at once (default 32)")
    p.add_argument("--in-flight", choices=("split", "each"), default="split",
                   help="split L among the daemons (default), or give each daemon L")
    p.add_argument("--settle", type=float, default=0.2,
                   help="daemon.settle_seconds (default 0.2)")
    p.add_argument("--pg", default=os.environ.get(
        "STTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL URL allowed to create databases; each run gets its own")
    p.add_argument("--hosts", default="1,2,3,4", help="daemon counts on PostgreSQL")
    p.add_argument("--timeout", type=float, default=300.0, help="per run (default 300 s)")
    p.add_argument("--grace", type=float, default=1.0,
                   help="seconds between the last transcript and SIGTERM (default 1)")
    args = p.parse_args(argv)

    n, t, lim = args.files, args.task_seconds, args.concurrency
    ideal = math.ceil(n / lim) * t
    how = "L divided among the daemons" if args.in_flight == "split" else "L each"
    print(f"multi-host throughput: N={n} files, T={t:g} s/task, service concurrency L={lim}, "
          f"max_in_flight {args.in_flight} ({how}), settle={args.settle:g} s")
    print(f"ideal bound ceil(N/L) x T = {ideal:.1f} s = {n / ideal:.2f} files/s; goal for "
          f"creates 1.00/file; round trips are PostgreSQL transactions (pg_stat_database "
          f"xact_commit delta of a database made for the run)")
    print()
    plan = [("sqlite", 1, False)] + [("postgres", int(k), True)
                                     for k in args.hosts.split(",")]
    head = (f"{'store':<8} {'daemons':>7} {'in flight':>10} {'wall s':>7} {'ideal s':>7} "
            f"{'xideal':>6} {'span s':>6} {'files/s':>7} {'ideal/s':>7} {'done':>5} "
            f"{'creates/f':>9} {'maxrun':>6} {'xacts/f':>7} {'cpu ms/f':>8} {'pg ms/f':>7} "
            f"{'shares':>12} "
            f"{'exit':>6}")
    print(head, flush=True)
    results = []
    for label, k, pg in plan:
        r = run_once(args, label, k, pg)
        results.append(r)
        sp = f"{r.span:6.1f}" if r.span is not None else f"{'n/a':>6}"
        xa = f"{r.xacts / n:7.1f}" if r.xacts is not None else f"{'n/a':>7}"
        pc = f"{1000 * r.pg_cpu / n:7.1f}" if r.pg_cpu is not None else f"{'n/a':>7}"
        print(f"{r.label:<8} {r.daemons:>7} {'+'.join(map(str, r.in_flight)):>10} "
              f"{r.wall:7.1f} {ideal:7.1f} {r.wall / ideal:6.2f} {sp} {n / r.wall:7.2f} "
              f"{n / ideal:7.2f} {r.done:>5} {r.creates / n:9.2f} {r.max_running:>6} {xa} "
              f"{1000 * r.cpu / n:8.1f} {pc} {'/'.join(map(str, r.shares)):>12} "
              f"{','.join(map(str, r.exit_codes)):>6}", flush=True)
    bad = [r for r in results if r.done != n or any(c != 0 for c in r.exit_codes)]
    if bad:
        print(f"WARNING: {len(bad)} run(s) did not finish every file cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
