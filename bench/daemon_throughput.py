"""Daemon throughput against the fake AI/ML API service (no network, no model).

Measures how close ``sttwatch run --once`` gets to the service's own limit. The fake service
(tests/fake_service.py) runs in this process with ``task_seconds`` T and ``concurrency`` L; N
fake recordings are written to a temporary inbox, and the daemon runs as a real subprocess
against it. Reported per run:

* wall seconds from launch to exit, and from the first create to the last transcript;
* the ideal bound ceil(N/L) x T (the service cannot finish sooner) and the ratio to it;
* creates and fetches per file, counted from the fake's request records;
* latency from a task finishing on the service (``svc.finished_at``) to its transcript file
  (file mtime) and to the daemon's ``done`` log event;
* the provider example's baseline: one file at a time, polling every 10 s, i.e.
  N x ceil(T/10) x 10 s.

Run:  /tmp/venv/bin/python bench/daemon_throughput.py [--files 100] [--task-seconds 1.0]
      [--concurrency 8] [--max-in-flight 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
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


@dataclass
class RunResult:
    wall: float
    startup: float | None  # launch -> the daemon's "starting" event
    span: float | None  # first create arrives -> last transcript written
    exit_code: int
    done: int
    creates: int
    fetches: int
    max_running: int
    to_file: list[float]  # service finished -> transcript mtime, per file
    to_event: list[float]  # service finished -> "done" event, per file


def write_config(root: Path, base_url: str, max_in_flight: int, settle: float) -> Path:
    cfg: dict[str, Any] = {
        "backend": "aimlapi",
        "api": {"base_url": base_url, "api_key_env": KEY_ENV, "max_in_flight": max_in_flight},
        "watch": [{"path": "./inbox"}],
        "state": {"path": "./state/sttwatch.db"},
        "daemon": {"settle_seconds": settle},
        "log": {"format": "json", "level": "info"},
    }
    path = root / "sttwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def iso_to_epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_once(args: argparse.Namespace) -> RunResult:
    fake_cfg = FakeConfig(key=KEY, task_seconds=args.task_seconds, concurrency=args.concurrency)
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp, \
            FakeService(fake_cfg) as svc:
        root = Path(tmp)
        inbox = root / "inbox"
        inbox.mkdir()
        for i in range(args.files):
            text = f"recording {i} " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(8))
            make_fake_audio(inbox / f"rec{i:04d}.mp3", text)
        cfg = write_config(root, svc.base_url, args.max_in_flight, args.settle)
        logfile = root / "daemon.log"
        env = {**os.environ, KEY_ENV: KEY}
        # monotonic (the fake's clock) -> epoch (file mtimes, log stamps), same process
        offset = time.time() - time.monotonic()
        with logfile.open("wb") as fh:
            launched = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "sttwatch", "run", "--config",
                                   str(cfg), "--once"], stdout=fh, stderr=fh, env=env,
                                  check=False)
            wall = time.monotonic() - launched
        lines = logfile.read_text().splitlines()
        if proc.returncode != 0:
            print(f"daemon exited {proc.returncode}; last log lines:", *lines[-5:], sep="\n  ")
        events = [json.loads(line) for line in lines if line.startswith("{")]
        starting = next((e for e in events if e.get("event") == "starting"), None)
        startup = (iso_to_epoch(starting["timestamp"]) - (launched + offset)
                   if starting else None)
        to_file: list[float] = []
        to_event: list[float] = []
        last_written = 0.0
        for e in events:
            if e.get("event") != "done":
                continue
            finished = svc.finished_at(e["generation_id"])
            outs = [Path(o) for o in e.get("outputs") or ()]
            txt = outs[0] if outs else Path(e["path"]).with_suffix(".txt")
            if finished is None or not txt.exists():
                continue
            written = txt.stat().st_mtime_ns / 1e9
            last_written = max(last_written, written)
            to_file.append(written - (finished + offset))
            to_event.append(iso_to_epoch(e["timestamp"]) - (finished + offset))
        creates = svc.creates()
        span = (last_written - (creates[0].time + offset)) if creates and last_written else None
        return RunResult(wall, startup, span, proc.returncode, len(to_file), len(creates),
                         len(svc.fetches()), svc.max_running_seen, to_file, to_event)


def describe(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (f"mean {statistics.mean(values):.3f} s, median {statistics.median(values):.3f} s, "
            f"p95 {p95:.3f} s, max {ordered[-1]:.3f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=100, help="N recordings (default 100)")
    p.add_argument("--task-seconds", type=float, default=1.0, help="T per task (default 1.0)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="L tasks the service runs at once (default 8)")
    p.add_argument("--max-in-flight", type=int, default=16,
                   help="api.max_in_flight of the daemon (default 16)")
    p.add_argument("--settle", type=float, default=0.2,
                   help="daemon.settle_seconds (default 0.2)")
    p.add_argument("--repeat", type=int, default=1, help="independent runs (default 1)")
    args = p.parse_args(argv)

    n, t, lim = args.files, args.task_seconds, args.concurrency
    ideal = math.ceil(n / lim) * t
    baseline = n * math.ceil(t / 10) * 10
    print(f"daemon throughput: N={n} files, T={t:g} s/task, service concurrency L={lim}, "
          f"max_in_flight={args.max_in_flight}, settle={args.settle:g} s, "
          f"repeat={args.repeat}")
    print(f"ideal bound ceil(N/L) x T = {ideal:.2f} s; provider example baseline "
          f"(one at a time, poll every 10 s) N x ceil(T/10) x 10 = {baseline:.0f} s")
    print()
    head = (f"{'run':>3} {'wall s':>8} {'xideal':>7} {'startup':>7} {'span s':>8} "
            f"{'xideal':>7} {'done':>5} {'creates/f':>9} {'fetches/f':>9} {'maxrun':>6} "
            f"{'fin->txt mean':>13} {'exit':>4}")
    print(head)
    results: list[RunResult] = []
    for i in range(args.repeat):
        r = run_once(args)
        results.append(r)
        span = f"{r.span:8.2f} {r.span / ideal:7.2f}" if r.span is not None else f"{'n/a':>16}"
        startup = f"{r.startup:7.2f}" if r.startup is not None else f"{'n/a':>7}"
        lat = f"{statistics.mean(r.to_file):13.3f}" if r.to_file else f"{'n/a':>13}"
        print(f"{i + 1:>3} {r.wall:8.2f} {r.wall / ideal:7.2f} {startup} {span} {r.done:>5} "
              f"{r.creates / n:9.2f} {r.fetches / n:9.2f} {r.max_running:>6} {lat} "
              f"{r.exit_code:>4}", flush=True)
    print()
    walls = [r.wall for r in results]
    spans = [r.span for r in results if r.span is not None]
    med = statistics.median(walls)
    print(f"wall (launch -> exit): median {med:.2f} s = {med / ideal:.2f}x the ideal "
          f"{ideal:.2f} s; {baseline / med:.1f}x faster than the provider example "
          f"({baseline:.0f} s)")
    if spans:
        ms = statistics.median(spans)
        print(f"first create -> last transcript: median {ms:.2f} s = {ms / ideal:.2f}x ideal")
    print(f"creates per file: {statistics.mean(r.creates / n for r in results):.2f}; "
          f"fetches per file: {statistics.mean(r.fetches / n for r in results):.2f}")
    print("service finished -> transcript file (mtime): "
          + describe([x for r in results for x in r.to_file]))
    print("service finished -> 'done' log event:        "
          + describe([x for r in results for x in r.to_event]))
    bad = [r for r in results if r.exit_code != 0 or r.done != n]
    if bad:
        print(f"WARNING: {len(bad)} run(s) did not finish every file cleanly "
              f"(exit codes {[r.exit_code for r in bad]}, done {[r.done for r in bad]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
