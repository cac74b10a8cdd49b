"""Pickup latency and rescan cost of the watcher alone (no store, no service).

    python bench/watcher_pickup.py [--files 20000] [--runs 20] [--compare OTHER_WATCHER_PY]

Rows: a file renamed in from an unwatched folder -> handed on; a file written in place and
closed -> handed on (measured from the close); one rescan of ``--files`` files -> every file
handed on (CPU seconds of this process). ``tick`` runs every 10 ms here; the daemon's loop
adds its own wake-up interval on top. ``--compare`` loads another watcher.py (e.g. an older
checkout's) and prints its figures beside these.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from sttwatch import watcher as current
from sttwatch.config import AUDIO_PATTERNS, WatchConfig

SETTLE = 2.0  # the default daemon.settle_seconds


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("sttwatch._bench_watcher", path,
                                                  submodule_search_locations=None)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "sttwatch"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def make(mod: ModuleType, inbox: Path) -> Any:
    cfg = WatchConfig(inbox, True, AUDIO_PATTERNS, (), None, False, None, None, None, None)
    w = mod.Watcher([cfg], SETTLE, time.time)
    w.start()
    return w


def until_taken(w: Any, name: str, start: float, limit: float = 10.0) -> float:
    while time.monotonic() - start < limit:
        if any(s.path.name == name for s in w.tick()):
            return time.monotonic() - start
        time.sleep(0.01)
    return float("inf")


def pickup(mod: ModuleType, runs: int) -> tuple[list[float], list[float]]:
    moved, closed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        inbox, elsewhere = Path(tmp) / "inbox", Path(tmp) / "elsewhere"
        inbox.mkdir()
        elsewhere.mkdir()
        w = make(mod, inbox)
        try:
            for i in range(runs):
                src = elsewhere / f"m{i}.wav"
                src.write_bytes(os.urandom(4096))
                t0 = time.monotonic()
                os.rename(src, inbox / src.name)
                moved.append(until_taken(w, src.name, t0))
                with (inbox / f"c{i}.wav").open("wb") as fh:
                    fh.write(os.urandom(4096))
                t0 = time.monotonic()  # the close happens as the block ends
                closed.append(until_taken(w, f"c{i}.wav", t0))
        finally:
            w.stop()
    return moved, closed


def rescan(mod: ModuleType, files: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        for i in range(files):
            folder = inbox / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                folder.mkdir(parents=True)
            (folder / f"r{i:06d}.wav").write_bytes(b"")
            os.utime(folder / f"r{i:06d}.wav", (1e9, 1e9))
        w = make(mod, inbox)  # start() scans once; let that pass
        taken = 0
        while taken < files:
            taken += len(w.tick())
        cpu0, wall0 = time.process_time(), time.monotonic()
        w.scan()
        taken = 0
        while taken < files:
            taken += len(w.tick())
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        w.stop()
    return cpu, wall


def ms(values: list[float]) -> str:
    q = sorted(values)
    return (f"p50 {statistics.median(q) * 1000:7.0f} ms, "
            f"p95 {q[int(len(q) * 0.95) - 1] * 1000:7.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--compare", help="another watcher.py to measure beside this one")
    args = ap.parse_args()
    mods = [("this", current)] + ([("compare", load(args.compare))] if args.compare else [])
    for label, mod in mods:
        moved, closed = pickup(mod, args.runs)
        cpu, wall = rescan(mod, args.files)
        per = 100000 / args.files
        print(f"[{label}] renamed in -> handed on : {ms(moved)}   goal p50 < 100 ms")
        print(f"[{label}] closed -> handed on     : {ms(closed)}   goal p50 < 100 ms")
        print(f"[{label}] rescan {args.files} files : {cpu:.2f} s CPU, {wall:.2f} s wall "
              f"(x{per:g} = {cpu * per:.1f} s CPU for 100,000)   goal < 1 s CPU")


if __name__ == "__main__":
    main()
