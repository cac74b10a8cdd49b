"""Video libraries: the bytes a film's upload costs, and what the no-speech check costs.

1. Bytes. A 60 s 1280x720 H.264 MKV with an AAC speech track (espeak-ng, 128 kbit/s AAC)
   against what ``api.upload`` sends for it: ``as_is`` (the film), ``audio`` (the default:
   the AAC track copied into .m4a) and ``compact`` (16 kHz mono Opus). Goal: ``audio`` sends
   at most twice the bytes of the film's own audio stream.
2. Detector cost. ``api.skip_no_speech`` runs the Silero VAD over a recording until it hears
   speech: a recording with none is decoded and checked whole, the worst case. Measured on
   ``--minutes`` of faint noise in a film-like track (44.1 kHz stereo AAC in an MKV with a
   small video stream) as CPU seconds (all threads) per hour of audio, and the peak RSS
   growth of the check and of the remux (both stream: it must not grow with the length).
   Goal: under 60 CPU-s per hour of audio (a minute of one core per hour), RSS under 200 MB.

Run:  python bench/video.py [--minutes 20]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BYTES_GOAL = 2.0
CPU_GOAL = 60.0
RSS_GOAL_MB = 200.0


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def film_bytes(tmp: Path) -> bool:
    from media import audio_bytes, film
    from speech import PARAGRAPH, speak

    from sttwatch.backends.shrink import prepared

    voice = speak(" ".join([PARAGRAPH] * 2), tmp / "voice.wav")
    mkv = tmp / "film.mkv"
    film(mkv, [(voice, "eng")], seconds=60)
    sh("ffmpeg", "-v", "error", "-y", "-i", str(mkv), "-map", "0", "-c:v", "copy", "-c:a",
       "aac", "-b:a", "128k", str(tmp / "film128.mkv"))
    mkv = tmp / "film128.mkv"
    size, audio = mkv.stat().st_size, audio_bytes(mkv)
    print(f"film: 60 s 1280x720 H.264 + AAC 128 kbit/s, {size / 1e6:.2f} MB, its audio "
          f"stream {audio / 1e6:.3f} MB")
    sent = {}
    for mode in ("as_is", "audio", "compact"):
        if mode == "as_is":
            sent[mode] = size
        else:
            with prepared(mkv, mode=mode, trim=False, min_silence=3.0,
                          language="en") as upload:
                sent[mode] = size if upload is None else upload.path.stat().st_size
        print(f"  api.upload: {mode:8} sends {sent[mode] / 1e6:8.3f} MB "
              f"({sent[mode] / audio:5.2f}x the audio stream)")
    ok = sent["audio"] <= BYTES_GOAL * audio
    print(f"  goal: audio <= {BYTES_GOAL:g}x the audio stream: "
          f"{sent['audio'] / audio:.2f}x {'OK' if ok else 'MISSED'}")
    return ok


def detector(tmp: Path, minutes: float) -> bool:
    from sttwatch.backends.media import choose_audio, probe, remux
    from sttwatch.screen import hears_speech

    seconds = minutes * 60
    long = tmp / "quiet.mkv"
    sh("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
       f"color=c=black:size=160x90:rate=1:duration={seconds}", "-f", "lavfi", "-i",
       f"anoisesrc=color=pink:amplitude=0.005:sample_rate=44100:duration={seconds}",
       "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k",
       "-metadata:s:a:0", "language=eng", str(long))
    warm = tmp / "warm.wav"  # loads the VAD's model first: a daemon has it loaded already
    sh("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=duration=2", str(warm))
    hears_speech(warm, None)
    base_rss, c0, t0 = peak_mb(), cpu(), time.monotonic()
    heard = hears_speech(long, "en")
    spent, wall = cpu() - c0, time.monotonic() - t0
    vad_rss = peak_mb() - base_rss
    per_hour = spent * 3600 / seconds
    print(f"no-speech check on {minutes:g} min of faint noise (44.1 kHz stereo AAC in MKV): "
          f"heard speech: {heard}; {spent:.1f} CPU-s ({wall:.1f} s wall) = "
          f"{per_hour:.1f} CPU-s per hour of audio; peak RSS +{vad_rss:.0f} MB")
    info = probe(long)
    assert info is not None
    track = choose_audio(info, "en")
    assert track is not None
    base_rss, c0 = peak_mb(), cpu()
    out, _mime = remux(long, track, tmp / "remuxed")
    print(f"remux of its audio track: {cpu() - c0:.1f} CPU-s, {out.stat().st_size / 1e6:.1f} MB "
          f"of {long.stat().st_size / 1e6:.1f} MB, peak RSS +{peak_mb() - base_rss:.0f} MB")
    ok = heard is False and per_hour <= CPU_GOAL and vad_rss <= RSS_GOAL_MB
    print(f"  goal: no speech found, <= {CPU_GOAL:g} CPU-s per hour, RSS <= "
          f"{RSS_GOAL_MB:g} MB: {'OK' if ok else 'MISSED'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="length of the no-speech recording (default 20)")
    args = ap.parse_args()
    if not all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng")):
        sys.exit("needs ffmpeg and espeak-ng")
    with tempfile.TemporaryDirectory(prefix="sttwatch-bench-video-") as d:
        tmp = Path(d)
        ok = film_bytes(tmp)
        ok = detector(tmp, args.minutes) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
