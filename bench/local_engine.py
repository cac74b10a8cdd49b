"""The offline engine three ways on the same espeak-ng recordings: is the daemon as fast as
faster-whisper called directly?

Ways (each one its own child process, so model loading counts and peak RSS is per way):
  a   faster-whisper in a loop: WhisperModel(resolve_model("tiny.en"), device cpu, int8,
      cpu_threads 2), transcribe(beam_size 5, word_timestamps True), all segments consumed
  b   python -m sttwatch transcribe --backend local FILES...
  c   python -m sttwatch run --config CFG --once on a fresh inbox copy (backend local), with
      the direct call's settings: local.workers 1, local.threads 2
  c2  as c with the defaults: local.workers 2, each with cores / workers = 1 thread
Repetitions interleave (a, b, c, c2 per rep). Reported per way: audio seconds per wall
second (median), ratio to (a) in the same rep (median), CPU seconds, peak RSS (ru_maxrss of
the child from os.wait4), and corpus WER (jiwer, lowercase, punctuation stripped).
Goal: the daemon (c) at >= 0.95x direct.

Run:  /tmp/venv/bin/python bench/local_engine.py [--min-audio 600] [--reps 2]
      [--per-clip 2] [--ways a,b,c,c2] [--cache bench/.cache]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from corpus import DEFAULT_CACHE, Clip, build_clips, normalize

GOAL = 0.95
LABELS = {"a": "faster-whisper direct", "b": "sttwatch transcribe", "c": "sttwatch run --once",
          "c2": "run --once default 2x1"}


@dataclass
class Run:
    way: str
    rep: int
    wall: float
    cpu: float
    rss_mb: float
    code: int
    texts: dict[str, str]  # source path -> transcript


def direct_worker(out: str, files: list[str]) -> None:
    """Way (a), inside its own process: the same model and settings sttwatch uses."""
    from faster_whisper import WhisperModel

    from sttwatch.backends.local import resolve_model
    model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8",
                         cpu_threads=2)
    texts = {}
    for f in files:
        segments, _info = model.transcribe(f, beam_size=5, word_timestamps=True)
        texts[f] = " ".join(s.text.strip() for s in segments)
    Path(out).write_text(json.dumps(texts))


def spawn(cmd: list[str], stdout: Path, env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run a child; wall seconds, CPU seconds, peak RSS MB (os.wait4) and exit code."""
    with stdout.open("wb") as fh, stdout.with_suffix(".err").open("wb") as eh:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=eh, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = stdout.with_suffix(".err").read_text(errors="replace").splitlines()[-5:]
        print(f"  ! {cmd[1:4]} exited {proc.returncode}:", *tail, sep="\n    ")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode


def parse_transcribe(stdout: str) -> dict[str, str]:
    """``== path`` headers followed by the txt rendering of that file."""
    texts: dict[str, str] = {}
    for block in re.split(r"^== ", stdout, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        texts[head.strip()] = " ".join(body.split())
    return texts


def daemon_inbox(work: Path, clips: list[Clip],
                 local: dict[str, int]) -> tuple[Path, dict[str, str]]:
    """A fresh inbox holding copies of the clips, and a config watching it."""
    inbox = work / "inbox"
    inbox.mkdir(parents=True)
    copies: dict[str, str] = {}
    for c in clips:
        copies[str(shutil.copy2(c.path, inbox / c.path.name))] = str(c.path)
    cfg = {"backend": "local", "local": local, "watch": [{"path": "./inbox"}],
           "state": {"path": "./state.db"}, "daemon": {"settle_seconds": 0.2},
           "log": {"format": "json", "level": "info"}}
    (work / "sttwatch.yaml").write_text(yaml.safe_dump(cfg))
    return work / "sttwatch.yaml", copies


def daemon_texts(log: Path, copies: dict[str, str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "done" and event.get("path") in copies:
            outs = [Path(o) for o in event.get("outputs") or () if o.endswith(".txt")]
            txt = outs[0] if outs else Path(event["path"]).with_suffix(".txt")
            texts[copies[event["path"]]] = " ".join(txt.read_text().split())
    return texts


def run_way(way: str, rep: int, clips: list[Clip], tmp: Path) -> Run:
    work = tmp / f"{way}-{rep}"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AIMLAPI_KEY"}
    files = [str(c.path) for c in clips]
    py = sys.executable
    if way == "a":
        out = work / "direct.json"
        wall, cpu, rss, code = spawn([py, __file__, "--direct-worker", str(out), *files],
                                     work / "out.log", env)
        texts = json.loads(out.read_text()) if out.exists() else {}
    elif way == "b":
        wall, cpu, rss, code = spawn([py, "-m", "sttwatch", "transcribe", "--backend", "local",
                                      *files], work / "out.log", env)
        texts = parse_transcribe((work / "out.log").read_text(errors="replace"))
    else:
        local = {"workers": 1, "threads": 2} if way == "c" else {}
        cfg, copies = daemon_inbox(work, clips, local)
        wall, cpu, rss, code = spawn([py, "-m", "sttwatch", "run", "--config", str(cfg),
                                      "--once"], work / "out.log", env)
        texts = daemon_texts(work / "out.err", copies)
    return Run(way, rep, wall, cpu, rss, code, texts)


def wer(clips: list[Clip], texts: dict[str, str]) -> tuple[float, int] | None:
    import jiwer
    refs = [normalize(c.text) for c in clips if str(c.path) in texts]
    hyps = [normalize(texts[str(c.path)]) for c in clips if str(c.path) in texts]
    return (float(jiwer.wer(refs, hyps)), len(refs)) if refs else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--min-audio", type=float, default=600,
                   help="seconds of speech at least (default 600)")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    p.add_argument("--per-clip", type=int, default=2,
                   help="paragraphs joined into one recording (default 2, ~25 s)")
    p.add_argument("--ways", default="a,b,c,c2", help="subset of a,b,c,c2 (default all)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="where generated speech is kept (default bench/.cache)")
    p.add_argument("--direct-worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.direct_worker:
        direct_worker(args.direct_worker[0], args.direct_worker[1:])
        return 0
    ways = [w for w in args.ways.split(",") if w]
    if bad := set(ways) - set(LABELS):
        p.error(f"unknown ways: {sorted(bad)}")

    clips = build_clips(args.cache, args.min_audio, args.per_clip)
    audio = sum(c.seconds for c in clips)
    print(f"local engine: {len(clips)} espeak-ng clips, {audio:.1f} s of audio "
          f"({min(c.seconds for c in clips):.0f}-{max(c.seconds for c in clips):.0f} s each), "
          f"cache {args.cache}; {args.reps} rep(s), ways {','.join(ways)}; "
          f"os.cpu_count()={os.cpu_count()}")
    print("each way is one child process (model load included); peak RSS = ru_maxrss of "
          "that child via os.wait4")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp:
        for rep in range(args.reps):
            for way in ways:
                r = run_way(way, rep, clips, Path(tmp))
                runs.append(r)
                print(f"  rep {rep + 1} {way:<2} wall {r.wall:7.2f} s  cpu {r.cpu:7.2f} s  "
                      f"rss {r.rss_mb:6.0f} MB  files {len(r.texts)}/{len(clips)}  "
                      f"exit {r.code}", flush=True)
    direct = {r.rep: r.wall for r in runs if r.way == "a"}
    print()
    print(f"{'way':<3} {'':<22} {'audio s/wall s':>14} {'x direct':>8} {'wall s':>8} "
          f"{'cpu s':>8} {'peak RSS MB':>11} {'WER':>6} {'files':>5}")
    speed: dict[str, float] = {}
    for way in ways:
        mine = [r for r in runs if r.way == way]
        speed[way] = statistics.median(audio / r.wall for r in mine)
        ratios = [direct[r.rep] / r.wall for r in mine if r.rep in direct]
        rtxt = f"{statistics.median(ratios):8.3f}" if ratios else f"{'n/a':>8}"
        w = wer(clips, mine[-1].texts)
        wtxt = f"{w[0]:6.3f}" if w else f"{'n/a':>6}"
        print(f"{way:<3} {LABELS[way]:<22} {speed[way]:14.2f} {rtxt} "
              f"{statistics.median(r.wall for r in mine):8.2f} "
              f"{statistics.median(r.cpu for r in mine):8.2f} "
              f"{max(r.rss_mb for r in mine):11.0f} {wtxt} {len(mine[-1].texts):>5}")
    print(f"(WER: corpus WER via jiwer.wer over lists, last rep; ideal bound: x direct = 1.0, "
          f"goal >= {GOAL})")
    if "a" in ways and "c" in ways:
        ratio = statistics.median(direct[r.rep] / r.wall for r in runs if r.way == "c")
        verdict = "MEETS" if ratio >= GOAL else "MISSES"
        print(f"verdict: daemon (c) runs at {ratio:.3f}x direct faster-whisper: {verdict} the "
              f"goal of >= {GOAL}x")
    return 1 if any(r.code != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
