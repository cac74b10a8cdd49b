"""The client's CPU per create and per fetch: the daemon's HTTP side, without the daemon.

    python bench/http_cpu.py                 # 500 creates + 500 fetches, three rounds
    python bench/http_cpu.py -n 200 --profile create   # cProfile of the creates, top 25

The fake AI/ML API service (tests/fake_service.py) runs in this process with tasks that
finish at once; creates (small files, uploaded) and fetches go through the real
``AimlApiBackend``. CPU is the calling thread's own (``time.thread_time``), so the fake's
threads, which share the process, are not counted. The figures are the best round's median
and lowest tenth: another process on the machine only makes the slow rounds slower.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from fake_service import FakeConfig, FakeService, make_fake_audio  # noqa: E402

from sttwatch.backends import Request  # noqa: E402
from sttwatch.backends.aimlapi import AimlApiBackend  # noqa: E402


def _per_call(calls: list[Callable[[], object]]) -> list[float]:
    """Each call's thread CPU in microseconds."""
    out = []
    for call in calls:
        start = time.thread_time()
        call()
        out.append((time.thread_time() - start) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=500, help="creates (and fetches) per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dialect", type=int, default=1, choices=(1, 2))
    ap.add_argument("--profile", choices=("create", "fetch"),
                    help="profile one kind of call with cProfile instead of timing")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, \
            FakeService(FakeConfig(task_seconds=0, dialect=args.dialect)) as svc:
        audio = make_fake_audio(Path(tmp) / "a.wav", "hello there general kenobi")
        backend = AimlApiBackend(svc.base_url, "test-key", "#g1_whisper-large")
        request = Request(1, "#g1_whisper-large", path=audio)
        ids = [backend.create(request).generation_id for _ in range(20)]  # warm up
        for gen_id in ids:
            backend.fetch(gen_id)

        def creates() -> list[Callable[[], object]]:
            return [lambda: backend.create(request)] * args.n

        def fetches() -> list[Callable[[], object]]:
            return [functools.partial(backend.fetch, ids[i % len(ids)])
                    for i in range(args.n)]

        if args.profile:
            calls = creates() if args.profile == "create" else fetches()
            prof = cProfile.Profile(time.thread_time)  # CPU, not waiting
            prof.enable()
            for call in calls:
                call()
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        best: dict[str, tuple[float, float]] = {}
        for r in range(args.rounds):
            for kind, calls in (("create", creates()), ("fetch", fetches())):
                times = _per_call(calls)
                med, p10 = statistics.median(times), statistics.quantiles(times, n=10)[0]
                was = best.get(kind, (med, p10))
                best[kind] = (min(was[0], med), min(was[1], p10))
                print(f"round {r + 1} {kind:6}: p10 {p10:5.0f} us  median {med:5.0f} us  "
                      f"mean {statistics.fmean(times):5.0f} us")
        (cm, cp), (fm, fp) = best["create"], best["fetch"]
        print(f"best median (p10): create {cm:.0f} ({cp:.0f}) us, fetch {fm:.0f} ({fp:.0f}) "
              f"us, per file {cm + fm:.0f} ({cp + fp:.0f}) us")
        backend.close()


if __name__ == "__main__":
    main()
