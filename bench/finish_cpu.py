"""CPU of the finish stage per job: stored results become transcript files and search entries.

The real Finisher over a real SqliteStore in a temporary folder, with results shaped as the
fake service returns them (tests/fake_service.py ``result_payload``), short recordings as the
daemon benchmarks send (bench/overhead.py ``recording_text``). Only the finishing is timed:
the jobs are admitted, sent and fetched through the store API beforehand.

    python bench/finish_cpu.py                       # 1,000 jobs, txt (the default output)
    python bench/finish_cpu.py --formats txt,json,srt,vtt --jobs 300
    python bench/finish_cpu.py --profile 25          # cProfile: the 25 costliest calls
    SORT=tottime python bench/finish_cpu.py --profile 25

``--no-probe`` leaves out the media probe of the json header (screen.audio_track_of), to
see the rest of the stage on its own; ``--no-index`` the search entries. On a busy machine
count instructions instead of CPU time: ``valgrind --tool=cachegrind --cache-sim=no`` over a
run and over its ``--setup-only`` twin, the difference divided by the jobs.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from fake_service import _Task, make_fake_audio, result_payload  # noqa: E402

import sttwatch.finisher as finisher_module  # noqa: E402
from sttwatch import log  # noqa: E402
from sttwatch.config import OutputConfig  # noqa: E402
from sttwatch.finisher import Finisher  # noqa: E402
from sttwatch.outcomes import Outcomes  # noqa: E402
from sttwatch.store import Admission, Plan  # noqa: E402
from sttwatch.store.sqlite import SqliteStore  # noqa: E402

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa")


def recording_text(i: int, words: int) -> str:
    return f"Recording {i} " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)) + "."


def fetched_store(folder: Path, jobs: int, words: int, plan: Plan, shape: str,
                  speakers: int) -> SqliteStore:
    """``jobs`` rows in state fetched, each with its source file and a stored result."""
    store = SqliteStore(folder / "sttwatch.db")
    inbox = folder / "inbox"
    now = time.time()
    texts = [recording_text(i, words) for i in range(jobs)]
    sources = [make_fake_audio(inbox / f"r{i:06d}.mp3", t) for i, t in enumerate(texts)]
    for start in range(0, jobs, 500):
        store.admit([Admission(str(p), p.stat().st_size, p.stat().st_mtime_ns, plan,
                               (str(p.with_suffix(".{format}")),))
                     for p in sources[start:start + 500]], now)
    for i in range(jobs):
        job = store.claim_submit("bench", now, 60, ["aimlapi"])
        assert job is not None
        gen = f"gen-{i:06d}-0000-0000-0000-000000000000"
        job = store.set_pending(job, gen, now, now + 1, {"x-aimlapi-credits-used": "21"},
                                f"{i:064x}")
        assert job is not None
        task = _Task(gen, texts[i], None, {"model": plan.model}, f"{i:064x}", 0.0,
                     "2025-01-01T00:00:00.000+00:00")
        job = store.set_fetched(job, result_payload(task, shape, speakers), now, 2.0)
        assert job is not None
    return store


def finish_all(store: SqliteStore, output: OutputConfig, jobs: int,
               since: float) -> tuple[int, list[float]]:
    """The jobs done, and the CPU per job (ms) of each claim of 16: their median stands
    when another process takes the cores in bursts (the whole run's mean does not)."""
    outcomes = Outcomes(store, None, output, 3, time.time,  # type: ignore[arg-type]
                        lambda _job: None)
    finisher = Finisher(store, outcomes, output, "bench", 60.0, time.time)
    # As in the daemon, whose results are stored after it started: nothing was left by a
    # crash, so no listing of the output folder for leftover temp files.
    finisher.started_at = since
    done, per_claim = 0, []
    while done < jobs:
        c0 = time.process_time()
        claim = store.claim_finish_due("bench", time.time(), 60.0, 16)
        if not claim.jobs:
            break
        for job in claim.jobs:
            finisher.finish(job)
        done += len(claim.jobs)
        per_claim.append((time.process_time() - c0) / len(claim.jobs) * 1e3)
    return outcomes.ended, per_claim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--words", type=int, default=8, help="words per recording")
    ap.add_argument("--formats", default="txt")
    ap.add_argument("--model", default="#g1_whisper-tiny")
    ap.add_argument("--shape", default="deepgram", help="result_payload's shape")
    ap.add_argument("--speakers", type=int, default=0)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--no-index", action="store_true",
                    help="leave the search entries out, to see what indexing costs")
    ap.add_argument("--setup-only", action="store_true",
                    help="store the results and stop: what to subtract from a count of "
                         "instructions of the whole run (valgrind --tool=cachegrind)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="run under cProfile and print the N costliest calls (cumulative)")
    a = ap.parse_args()
    # The daemon's JSON lines, written where they cost their rendering and nothing more.
    log.setup("info", "json", open(os.devnull, "w"))  # noqa: SIM115
    if a.no_probe:
        finisher_module.audio_track_of = lambda _path, _language: {}  # type: ignore[assignment]
    if a.no_index:
        finisher_module.index_result = lambda *_args: None  # type: ignore[assignment]
    formats = tuple(a.formats.split(","))
    plan = Plan("aimlapi", a.model, {}, formats, "/")
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # no disk wait in fsyncs
    with tempfile.TemporaryDirectory(prefix="sttwatch-finish-", dir=base) as tmp:
        output = OutputConfig(formats, "{stem}.{format}", None, "keep", None, False)
        since = time.time()
        store = fetched_store(Path(tmp), a.jobs, a.words, plan, a.shape, a.speakers)
        if a.setup_only:
            store.close()
            return
        try:
            prof = cProfile.Profile() if a.profile else None
            c0, t0 = time.process_time(), time.perf_counter()
            if prof is not None:
                prof.enable()
            ended, per_claim = finish_all(store, output, a.jobs, since)
            if prof is not None:
                prof.disable()
            c1, t1 = time.process_time(), time.perf_counter()
        finally:
            store.close()
    assert ended == a.jobs, f"{ended} of {a.jobs} jobs done"
    print(f"{a.jobs} jobs ({a.words + 2} words, {a.formats}, {a.model}, {a.shape}"
          f"{', no probe' if a.no_probe else ''}): {(c1 - c0) / a.jobs * 1e3:.3f} ms CPU "
          f"per job ({statistics.median(per_claim):.3f} median of its claims of 16), "
          f"{(t1 - t0) / a.jobs * 1e3:.3f} ms wall")
    if prof is not None:
        stats: Any = pstats.Stats(prof)
        stats.sort_stats(os.environ.get("SORT", "cumulative")).print_stats(a.profile)


if __name__ == "__main__":
    main()
