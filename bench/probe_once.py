"""CPU a job spends opening its container, before and after it is probed once (media.Probes).

Three kinds of file: the fake service's fake audio (tests/fake_service.py; PyAV cannot read
it, as in the daemon benchmarks), a short MP3 and a short MP4 film made with ffmpeg. Each is
read as the daemon reads a watched file, through a mount's worker a block at a time
(sharefile.py). Reported per kind, in CPU milliseconds of this process (every thread):

* ``probe``: one ``media.probe``;
* ``stages before``: what the submitter and the finisher did per file: the screen
  (``screen.screen``), the upload's preparation (``shrink.prepared``, ``api.upload:
  audio``) and the json header's track (``screen.audio_track_of``), each probing;
* ``stages after``: the same three handed one probe of the job's version.

Run:  .venv/bin/python bench/probe_once.py [--rounds 200] [--skip-no-speech]

Without ``--skip-no-speech`` the screen only looks for subtitles (``skip_subtitled``), so a
real recording's voice-activity check (a decode, the same before and after) does not hide
what the probes cost; the fake audio cannot be decoded, so for it the two are the same.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_service import make_fake_audio  # noqa: E402

from sttwatch.backends.media import MediaProbe, Probes, probe  # noqa: E402
from sttwatch.backends.shrink import prepared  # noqa: E402
from sttwatch.fsgate import FsGate  # noqa: E402
from sttwatch.log import setup  # noqa: E402
from sttwatch.screen import audio_track_of, screen  # noqa: E402
from sttwatch.sharefile import ShareFile, Shares, Source  # noqa: E402


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def files(folder: Path) -> dict[str, Path]:
    mp3, mp4 = folder / "tone.mp3", folder / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-c:a", "libmp3lame",
           "-b:a", "64k", str(mp3))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=5", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=5", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-shortest", str(mp4))
    return {"fake": make_fake_audio(folder / "fake.mp3", "a fake recording"), "mp3": mp3,
            "mp4": mp4}


def cpu_ms(rounds: int, fn: Callable[[], object]) -> float:
    fn()  # imports and first-use costs out of the figure
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) * 1000 / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--skip-no-speech", action="store_true",
                    help="the screen's default voice-activity check as well")
    args = ap.parse_args()
    setup("warning")  # an upload_prepared line per round is not the figure
    gate = FsGate(5.0)

    def open_source(path: Path) -> Source:
        return ShareFile(gate, "bench", path)

    shares = Shares(open=open_source)
    with tempfile.TemporaryDirectory(prefix="probe-once-") as tmp:
        made = files(Path(tmp))

        def stages(path: Path, media: MediaProbe | None) -> None:
            screen(path, "en", skip_subtitled=True, skip_no_speech=args.skip_no_speech,
                   shares=shares, media=media)
            with prepared(path, mode="audio", trim=False, min_silence=3.0, language="en",
                          opener=open_source, media=media):
                pass
            audio_track_of(path, "en", media)

        def once_each(path: Path) -> None:
            probes = Probes()
            stat = path.stat()
            stages(path, probes.of(path, stat.st_size, stat.st_mtime_ns, open_source))
            assert probes.probed == 1

        print(f"{'file':6} {'probe':>8} {'stages before':>14} {'stages after':>13} "
              f"{'saved':>8}   (CPU ms per file, {args.rounds} rounds)")
        for kind, path in made.items():
            one = cpu_ms(args.rounds, lambda p=path: probe(p, open_source))  # type: ignore[misc]
            before = cpu_ms(args.rounds, lambda p=path: stages(p, None))  # type: ignore[misc]
            after = cpu_ms(args.rounds, lambda p=path: once_each(p))  # type: ignore[misc]
            print(f"{kind:6} {one:8.2f} {before:14.2f} {after:13.2f} {before - after:8.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
