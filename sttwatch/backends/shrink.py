"""Fewer bytes and fewer billed seconds for an upload: the audio the service needs, no more.

``api.upload: compact`` re-encodes the recording as 16 kHz mono Opus at 24 kbit/s (speech
models hear 16 kHz mono anyway; an 88.7 s 44.1 kHz stereo WAV goes from 15.6 MB to about
280 KB). ``api.trim_silence`` drops silences longer than ``trim_min_silence`` found by the
Silero VAD that faster-whisper ships, and returns the map that puts the service's times back
on the recording's clock (sttwatch/timeline.py).

Both decode with PyAV piece by piece and write to a file in a private temporary folder that
the upload then streams and the caller deletes: memory stays flat whatever the length. PyAV
comes with ``sttwatch[local]``; without it both fall back to sending the file as it is,
with one warning.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..timeline import Timeline, kept_seconds
from .audio import SAMPLE_RATE, decoded, probe_duration, stream_chunks

log = structlog.get_logger("sttwatch.shrink")

OPUS_BITRATE = 24_000
COMPACT_MAX_BPS = 48_000  # a file at or under this many bits per second is compact already
PAD_SECONDS = 0.5  # silence kept on each side of speech where a long silence is cut
VAD_CHUNK_SECONDS = 120.0


@dataclass(frozen=True)
class Upload:
    """What to send in place of the recording; ``timeline`` when silences were cut."""

    path: Path
    name: str
    mime: str
    timeline: Timeline | None = None


def pyav_missing() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return True
    return False


def already_compact(path: Path) -> bool:
    """Opus, or anything at no more than ``COMPACT_MAX_BPS`` (low-bitrate AAC, MP3, AMR):
    re-encoding would save little and cost a generation of quality."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            codec = container.streams.audio[0].codec_context.name
    except (av.error.FFmpegError, IndexError):
        return True  # not decodable here: let the service judge the file as it is
    if codec == "opus":
        return True
    duration = probe_duration(path)
    return bool(duration) and path.stat().st_size * 8 / float(duration or 1) <= COMPACT_MAX_BPS


def speech_ranges(path: Path) -> list[tuple[float, float]]:
    """Where the VAD hears speech, in seconds, over the whole file (decoded in pieces)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=500, speech_pad_ms=0)
    found: list[tuple[float, float]] = []
    for offset, audio in stream_chunks(path, VAD_CHUNK_SECONDS):
        for ts in get_speech_timestamps(audio, options):
            found.append((offset + ts["start"] / SAMPLE_RATE, offset + ts["end"] / SAMPLE_RATE))
    return found


def keep_ranges(speech: Sequence[tuple[float, float]], duration: float, min_silence: float,
                pad: float = PAD_SECONDS) -> list[tuple[float, float]]:
    """The stretches to upload: everything except silences longer than ``min_silence``,
    with ``pad`` seconds of each cut silence kept beside the speech so no word is clipped."""
    pad = min(pad, min_silence / 2)
    kept: list[tuple[float, float]] = []
    start, end = 0.0, None  # the stretch being built, from the start of the file
    for s, e in speech:
        if end is None:
            start = 0.0 if s <= min_silence else s - pad
        elif s - end > min_silence:
            kept.append((start, end + pad))
            start = s - pad
        end = e if end is None else max(end, e)
    if end is None:
        return []  # no speech at all: nothing worth cutting around
    kept.append((start, duration if duration - end <= min_silence else end + pad))
    return kept


def timeline_of(kept: Sequence[tuple[float, float]]) -> Timeline:
    pieces, at = [], 0.0
    for s, e in kept:
        pieces.append((round(at, 3), round(s, 3), round(e - s, 3)))
        at += e - s
    return tuple(pieces)


def _samples(path: Path) -> Iterator[Any]:
    """16 kHz mono s16 sample arrays of the whole file, in decoder-sized pieces."""
    return decoded(path)


def encode(path: Path, target: Path, *, opus: bool,
           kept: Sequence[tuple[float, float]] | None = None) -> None:
    """Write ``path`` (only its ``kept`` stretches, when given) to ``target`` as 16 kHz mono
    Opus in Ogg, or FLAC when ``opus`` is false (trimming without ``compact``: lossless)."""
    import av
    import numpy as np

    bounds = [(round(s * SAMPLE_RATE), round(e * SAMPLE_RATE)) for s, e in kept or ()]
    with av.open(str(target), "w", format="ogg" if opus else "flac") as out:
        stream: Any = out.add_stream("libopus" if opus else "flac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        if opus:
            stream.bit_rate = OPUS_BITRATE
        pos = 0
        for pcm in _samples(path):
            n = pcm.shape[0]
            if bounds:
                parts = [pcm[max(s, pos) - pos:min(e, pos + n) - pos]
                         for s, e in bounds if s < pos + n and e > pos]
                pcm = np.concatenate(parts) if parts else pcm[:0]
            pos += n
            if pcm.shape[0] == 0:
                continue
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _make(path: Path, folder: Path, *, compact: bool, trim: bool,
          min_silence: float) -> Upload | None:
    kept = None
    if trim:
        duration = probe_duration(path) or 0.0
        speech = speech_ranges(path)
        end = max(duration, speech[-1][1] if speech else 0.0)
        kept = keep_ranges(speech, end, min_silence)
        if not kept or sum(e - s for s, e in kept) >= end - min_silence:
            kept = None  # nothing long enough to cut
    if kept is None and (not compact or already_compact(path)):
        return None
    target = folder / (path.stem[:100] + (".ogg" if compact else ".flac"))
    encode(path, target, opus=compact, kept=kept)
    return Upload(target, target.name, "audio/ogg" if compact else "audio/flac",
                  timeline_of(kept) if kept else None)


@contextlib.contextmanager
def prepared(path: Path, *, compact: bool, trim: bool, min_silence: float,
             job_id: int = 0) -> Iterator[Upload | None]:
    """What to upload for ``path``: None for the file as it is, else a smaller file in a
    private temporary folder, removed when the block ends. A file PyAV cannot decode goes
    as it is: the service's verdict on it is the one the user should see."""
    import av

    tmp = Path(tempfile.mkdtemp(prefix="sttwatch-upload-"))  # mode 0700: only we read it
    try:
        try:
            upload = _make(path, tmp, compact=compact, trim=trim, min_silence=min_silence)
        except (av.error.FFmpegError, IndexError, ValueError) as exc:
            log.warning("upload_not_shrunk", job_id=job_id, path=str(path),
                        reason=f"cannot decode it here: {exc}")
            upload = None
        if upload is not None:
            log.info("upload_prepared", job_id=job_id, path=str(path),
                     bytes=upload.path.stat().st_size, source_bytes=path.stat().st_size,
                     compact=compact, kept_seconds=round(kept_seconds(upload.timeline), 1)
                     if upload.timeline else None)
        yield upload
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
