"""The local engine's modes on the same espeak-ng recordings: does ``vad_filter`` cost words
or time, and does faster-whisper's BatchedInferencePipeline beat today's two workers?

Modes (each its own child process; model load excluded from the timed part, which is every
file created on the engine at once until the last result is in, as the daemon does):
  workers      today's default: local.workers 2 x 1 thread, vad_filter off
  workers+vad  the same with vad_filter on
  batched      BatchedInferencePipeline, 1 worker x 2 threads, batch_size 8, vad_filter on
  batched-novad  the same with vad_filter off
Reported per mode: audio seconds per wall second (median over reps), CPU seconds, corpus WER
(jiwer, lowercase, punctuation stripped).

Run:  python bench/local_modes.py [--min-audio 300] [--reps 1] [--modes workers,batched]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import DEFAULT_CACHE, build_clips, normalize

MODES = {
    "workers": {"workers": 2, "threads": 1, "vad_filter": False},
    "workers+vad": {"workers": 2, "threads": 1, "vad_filter": True},
    "batched": {"workers": 1, "threads": 2, "vad_filter": True, "batch_size": 8},
    "batched-novad": {"workers": 1, "threads": 2, "vad_filter": False, "batch_size": 8},
}


def worker(mode: str, out: str, files: list[str]) -> None:
    """One mode inside its own process: the engine sttwatch runs, fed every file at once."""
    from sttwatch.backends import Request, TaskState
    from sttwatch.backends.local import LocalBackend, LocalSettings

    engine = LocalBackend(LocalSettings(**MODES[mode]))  # type: ignore[arg-type]
    start, cpu0 = time.monotonic(), time.process_time()
    ids = {engine.create(Request(job_id=i, model="tiny.en", path=Path(f))).generation_id: f
           for i, f in enumerate(files)}
    texts: dict[str, str] = {}
    while len(texts) < len(ids):
        for gen, f in ids.items():
            if f not in texts:
                status = engine.fetch(gen)
                if status.state is TaskState.DONE:
                    assert status.result is not None
                    texts[f] = status.result["results"]["channels"][0]["alternatives"][0][
                        "transcript"]
                elif status.state is TaskState.FAILED:
                    raise SystemExit(f"{f}: {status.error}")
        time.sleep(0.05)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu0
    engine.close()
    Path(out).write_text(json.dumps({"wall": wall, "cpu": cpu, "texts": texts}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--min-audio", type=float, default=300)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2:])
        return 0
    import jiwer

    modes = [m for m in args.modes.split(",") if m]
    clips = build_clips(args.cache, args.min_audio, 2)
    audio = sum(c.seconds for c in clips)
    print(f"local modes: {len(clips)} espeak-ng clips, {audio:.1f} s of audio, {args.reps} "
          f"rep(s), os.cpu_count()={os.cpu_count()}")
    runs: dict[str, list[dict[str, object]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp:
        for rep in range(args.reps):
            for mode in modes:
                out = Path(tmp) / f"{mode}-{rep}.json"
                subprocess.run([sys.executable, __file__, "--worker", mode, str(out),
                                *(str(c.path) for c in clips)], check=True)
                got = json.loads(out.read_text())
                runs[mode].append(got)
                print(f"  rep {rep + 1} {mode:<14} wall {got['wall']:7.2f} s  cpu "
                      f"{got['cpu']:7.2f} s", flush=True)
    print(f"\n{'mode':<14} {'audio s/wall s':>14} {'cpu s':>8} {'WER':>6}")
    for mode in modes:
        mine = runs[mode]
        texts = mine[-1]["texts"]
        assert isinstance(texts, dict)
        w = jiwer.wer([normalize(c.text) for c in clips],
                      [normalize(texts[str(c.path)]) for c in clips])
        print(f"{mode:<14} {statistics.median(audio / float(r['wall']) for r in mine):14.2f} "  # type: ignore[arg-type]
              f"{statistics.median(float(r['cpu']) for r in mine):8.2f} {w:6.3f}")  # type: ignore[arg-type]
    print("goal: vad_filter on by default only if its WER and speed are no worse; keep the "
          "faster of workers and batched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
