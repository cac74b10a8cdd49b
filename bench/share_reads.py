"""What reading a recording through its mount's worker costs (sttwatch/sharefile.py).

The hash and the upload read a watched recording a block at a time on its mount's worker
thread, each block with the deadline, instead of reading it on their own thread. This prints
the CPU time (user + system, this process) of the sha256 of a file and of reading it in
8 KiB pieces (what the upload asks), read directly and through the gate, beside the goal
(at most 10 % more than the direct read) and the ideal bound (the direct read itself).

    python bench/share_reads.py [--mib 256] [--rounds 3] [--files 300]

The file is made in a temporary folder on the local disk: the figure is the gate's own cost,
not the share's speed.

With ``--files N`` it prints instead the CPU time per file of what the stages do to each of
N small recordings through ``Shares`` (online?, a stat, the hash, a transcript written and
looked at) in a watched folder on the local disk: made on the calling thread, as the watcher
does on a local filesystem, and through the mount's worker, as on a share.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sttwatch.config import WatchConfig
from sttwatch.fsgate import FsGate
from sttwatch.identity import sha256_of
from sttwatch.mounts import MountTable
from sttwatch.sharefile import ShareFile, Shares, Source, plain_open
from sttwatch.watcher import Watcher


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pieces(path: Path, opener: Callable[[Path], Source]) -> None:
    with opener(path) as fh:
        while fh.read(8192):
            pass


def _best(rounds: int, fn: Callable[[], object]) -> tuple[float, float]:
    """The lowest CPU time of ``rounds`` runs, with that run's wall time."""
    best = (float("inf"), 0.0)
    for _ in range(rounds):
        c0, t0 = _cpu(), time.monotonic()
        fn()
        best = min(best, (_cpu() - c0, time.monotonic() - t0))
    return best


def _stages(shares: Shares, path: Path) -> None:
    """A file's calls in the submitter and the finisher, in short."""
    out = path.with_suffix(".txt")
    assert shares.is_online(path)
    shares.call(path, lambda: path.stat().st_size)
    sha256_of(path, shares.open)
    shares.call(out, lambda: out.write_text("a transcript\n"))
    shares.call(path, path.exists)


def small_files(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp)
        files = [inbox / f"rec{i}.mp3" for i in range(count)]
        for f in files:
            f.write_bytes(os.urandom(16 << 10))
        cfg = WatchConfig(inbox, False, ("*.mp3",), (), None, False, None, None, None, None)
        print(f"{count} files of 16 KiB, best of {rounds}, load average "
              f"{os.getloadavg()[0]:.2f}")
        for what, table in (("here (a local folder)", MountTable()),
                            ("on the worker (a share)", MountTable(Path(tmp) / "none"))):
            w = Watcher([cfg], 1.0, time.time, mounts=table)
            w.watch_states()
            shares = Shares(w.is_online, w.call, w.open)
            cpu, wall = _best(rounds, lambda s=shares: [_stages(s, f) for f in files])
            print(f"{what:24s} {cpu / count * 1e6:5.0f} us CPU a file "
                  f"({wall / count * 1e6:.0f} us wall)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=0)
    args = ap.parse_args()
    if args.files:
        small_files(args.files, args.rounds)
        return
    gate = FsGate(deadline=5.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.bin"
        with path.open("wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(1 << 20))

        def gated(p: Path) -> Source:
            return ShareFile(gate, "/", p)

        print(f"{args.mib} MiB, best of {args.rounds}, load average "
              f"{os.getloadavg()[0]:.2f}")
        for what, run in (("sha256", lambda o: sha256_of(path, o)),
                          ("8 KiB reads", lambda o: _pieces(path, o))):
            ideal, ideal_wall = _best(args.rounds, lambda r=run: r(plain_open))
            got, got_wall = _best(args.rounds, lambda r=run: r(gated))
            print(f"{what:12s} through the gate: {got:.2f} CPU-s ({got_wall:.2f} s wall); "
                  f"goal <= {ideal * 1.1:.2f}; ideal {ideal:.2f} (direct, "
                  f"{ideal_wall:.2f} s wall)")


if __name__ == "__main__":
    main()
