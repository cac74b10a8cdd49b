"""Real media for tests, made at test time with ffmpeg, espeak-ng and sox (no binary
fixtures): films with H.264 video, language-tagged AAC tracks and subtitle streams, and
noise without speech. ``streams`` reads what a file holds with ffprobe, as a user would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from speech import speak

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
SOX = shutil.which("sox")


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def speak_fr(text: str, path: Path) -> Path:
    exe = shutil.which("espeak-ng")
    assert exe is not None
    subprocess.run([exe, "-v", "fr", "-s", "150", "-w", str(path), text], check=True)
    return path


def film(path: Path, tracks: list[tuple[Path, str | None]], *, seconds: float,
         size: str = "1280x720", rate: int = 25, default: int = 0,
         subtitles: list[tuple[Path, str]] | None = None) -> Path:
    """An MKV of ``seconds`` of H.264 test picture with one AAC track per ``(wav,
    language)`` (padded with silence to the film's length; ``default`` flags one) and one
    SRT subtitle stream per ``(srt, language)``."""
    assert FFMPEG is not None
    args = [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    for wav, _lang in tracks:
        args += ["-i", str(wav)]
    for srt, _lang in subtitles or []:
        args += ["-i", str(srt)]
    args += ["-map", "0:v"]
    for i in range(len(tracks)):
        args += ["-map", f"{i + 1}:a"]
    for i in range(len(subtitles or [])):
        args += ["-map", f"{len(tracks) + i + 1}:s"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "64k", "-af", "apad", "-t", str(seconds)]
    for i, (_wav, lang) in enumerate(tracks):
        if lang:
            args += [f"-metadata:s:a:{i}", f"language={lang}"]
        args += [f"-disposition:a:{i}", "default" if i == default else "0"]
    for i, (_srt, lang) in enumerate(subtitles or []):
        args += [f"-metadata:s:s:{i}", f"language={lang}"]
    run(*args, str(path))
    return path


def srt_file(path: Path, text: str = "Hello there.") -> Path:
    path.write_text(f"1\n00:00:00,500 --> 00:00:02,000\n{text}\n")
    return path


def faint_noise(path: Path, seconds: float = 60.0) -> Path:
    """Faint white noise, no speech: what an empty room sounds like."""
    assert SOX is not None
    run(SOX, "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", str(seconds),
        "whitenoise", "vol", "0.01")
    return path


def quieter(src: Path, path: Path, volume: float) -> Path:
    assert SOX is not None
    run(SOX, str(src), str(path), "vol", str(volume))
    return path


def streams(path: Path) -> list[dict[str, Any]]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                          "stream=index,codec_type,codec_name:stream_tags=language",
                          "-of", "json", str(path)], check=True, capture_output=True).stdout
    return list(json.loads(out)["streams"])


def duration(path: Path) -> float:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], check=True, capture_output=True).stdout
    return float(out)


def packet_sizes(path: Path, stream: str = "a:0") -> list[int]:
    """The sizes of one stream's packets, in order: a track's fingerprint, kept by a copy."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", stream, "-show_entries",
                          "packet=size", "-of", "csv=p=0", str(path)], check=True,
                         capture_output=True).stdout.decode()
    return [int(line) for line in out.split() if line.strip().isdigit()]


def audio_bytes(path: Path) -> int:
    """Bytes of the first audio stream's packets: the speech's own share of a film."""
    return sum(packet_sizes(path))


def long_quiet_film(path: Path, minutes: float) -> Path:
    """``minutes`` of a film-like file without speech (a tiny 1 fps picture, 44.1 kHz
    stereo AAC of faint noise), made by looping a 10 s piece without re-encoding: cheap."""
    assert FFMPEG is not None
    piece = path.with_name(path.stem + "-piece.mkv")
    run(FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
        "color=c=black:size=160x90:rate=1:duration=10", "-f", "lavfi", "-i",
        "anoisesrc=color=pink:amplitude=0.005:sample_rate=44100:duration=10", "-ac", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "96k",
        "-metadata:s:a:0", "language=eng", str(piece))
    run(FFMPEG, "-v", "error", "-y", "-stream_loop", str(int(minutes * 6) - 1), "-i", str(piece),
        "-c", "copy", str(path))
    piece.unlink()
    return path


__all__ = ["audio_bytes", "duration", "faint_noise", "film", "long_quiet_film", "packet_sizes",
           "quieter", "speak", "speak_fr", "srt_file", "streams"]
