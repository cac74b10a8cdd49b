"""Peak memory and speed of the offline engine on one long recording.

A ~60 s espeak-ng clip (the paragraphs of corpus.py, several voices) is repeated with sox into
one WAV of --seconds (default 3600), cached under bench/.cache/long/. Then
``python -m sttwatch transcribe --backend local FILE`` runs as a child process, first on the
short clip (baseline: model and runtime) and then on the long file. Reported: duration, wall
time, audio seconds per wall second, and the child's peak RSS (ru_maxrss via os.wait4),
next to the size of the decoded audio as float32 at 16 kHz (seconds x 16000 x 4 bytes): if
peak minus baseline is about that size the samples are held once, about twice that, twice.

Run:  /tmp/venv/bin/python bench/long_file_memory.py [--seconds 3600] [--no-baseline]
      [--cache bench/.cache]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from corpus import DEFAULT_CACHE, PARAGRAPHS, VOICES, concat, normalize, sox, speak, wav_seconds

MB = 1024 * 1024


@dataclass
class Child:
    wall: float
    cpu: float
    rss_bytes: int
    code: int
    words: int


def base_clip(cache: Path, min_seconds: float) -> tuple[Path, str]:
    """Paragraphs in rotating voices, joined until at least ``min_seconds`` long."""
    parts: list[Path] = []
    texts: list[str] = []
    total = 0.0
    for i, text in enumerate(PARAGRAPHS * 4):
        voice, speed = VOICES[i % len(VOICES)]
        tag = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:12]
        parts.append(speak(text, cache / "parts" / f"{tag}.wav", voice, speed))
        texts.append(text)
        total += wav_seconds(parts[-1])
        if total >= min_seconds:
            break
    tag = hashlib.sha1("|".join(p.name for p in parts).encode()).hexdigest()[:12]
    return concat(parts, cache / "long" / f"base_{tag}.wav"), " ".join(texts)


def long_file(base: Path, seconds: float) -> Path:
    """``sox base.wav out.wav repeat N trim 0 S``: the clip over and over, cut to length."""
    out = base.with_name(f"{base.stem}_{seconds:g}s.wav")
    if not out.exists():
        repeats = max(0, math.ceil(seconds / wav_seconds(base)) - 1)
        tmp = out.with_suffix(".part.wav")
        sox(base, tmp, "repeat", str(repeats), "trim", "0", f"{seconds:g}")
        tmp.replace(out)
    return out


def soxi_seconds(path: Path) -> float:
    try:
        done = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True,
                              check=True)
        return float(done.stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return wav_seconds(path)


def transcribe(path: Path, work: Path) -> Child:
    """One ``sttwatch transcribe`` child; rusage from os.wait4 (ru_maxrss is KiB on Linux)."""
    env = {k: v for k, v in os.environ.items() if k != "AIMLAPI_KEY"}
    out, err = work / f"{path.stem}.out", work / f"{path.stem}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sttwatch", "transcribe", "--backend",
                                 "local", str(path)], stdout=fo, stderr=fe, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  ! transcribe exited {code}:",
              *err.read_text(errors="replace").splitlines()[-5:], sep="\n    ")
    words = len(normalize(out.read_text(errors="replace")).split())
    return Child(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, code, words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3600,
                   help="length of the long recording (default 3600)")
    p.add_argument("--clip-seconds", type=float, default=60,
                   help="length of the repeated clip, at least (default 60)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the short-clip run that shows model + runtime memory")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="where generated speech is kept (default bench/.cache)")
    args = p.parse_args(argv)

    base, base_text = base_clip(args.cache, args.clip_seconds)
    long = long_file(base, args.seconds)
    base_dur, dur = soxi_seconds(base), soxi_seconds(long)
    decoded = dur * 16000 * 4
    ref_words = len(normalize(base_text).split()) * dur / base_dur
    print(f"long recording: {long} ({dur:.1f} s by soxi -D, {long.stat().st_size / MB:.0f} MB "
          f"on disk), the {base_dur:.1f} s clip repeated")
    print(f"decoded audio as float32 at 16 kHz: {dur:.0f} s x 16000 x 4 B = "
          f"{decoded / MB:.1f} MB (x2 = {2 * decoded / MB:.1f} MB)")
    print("peak RSS = ru_maxrss of the child via os.wait4; one child per run, run in turn")
    print()
    print(f"{'run':<18} {'audio s':>8} {'wall s':>8} {'audio s/wall s':>14} {'cpu s':>8} "
          f"{'peak RSS MB':>11} {'words':>7} {'exit':>4}")
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-") as tmp:
        runs: list[tuple[str, float, Child]] = []
        if not args.no_baseline:
            runs.append(("baseline clip", base_dur, transcribe(base, Path(tmp))))
            show(*runs[-1])
        runs.append(("long recording", dur, transcribe(long, Path(tmp))))
        show(*runs[-1])
    long_run = runs[-1][2]
    print()
    print(f"transcript words: {long_run.words} (reference about {ref_words:.0f})")
    if not args.no_baseline:
        delta = long_run.rss_bytes - runs[0][2].rss_bytes
        extra = (dur - base_dur) * 16000 * 4
        print(f"peak RSS growth over the baseline: {delta / MB:.1f} MB for {dur - base_dur:.0f} "
              f"s more audio = {delta / MB / ((dur - base_dur) / 60):.2f} MB per audio minute "
              f"= {delta / extra:.2f}x that extra audio as float32 ({extra / MB:.1f} MB); "
              "about 1x: samples held once, about 2x: twice, more: other per-second buffers")
    return 1 if any(c.code != 0 for _, _, c in runs) else 0


def show(name: str, audio: float, c: Child) -> None:
    print(f"{name:<18} {audio:8.1f} {c.wall:8.2f} {audio / c.wall:14.2f} {c.cpu:8.2f} "
          f"{c.rss_bytes / MB:11.0f} {c.words:>7} {c.code:>4}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
