"""Fewer bytes and fewer billed seconds for an upload: the audio the service needs, no more.

``api.upload: audio`` (the default) sends one audio track and no video: a film's track in
the folder's language is copied into its own container without re-encoding where the service
takes its codec (AAC in .m4a, Opus in .ogg, MP3), else re-encoded as below; an audio file
the service reads goes as it is. ``api.upload: compact`` re-encodes the recording as 16 kHz
mono Opus at 24 kbit/s (speech models hear 16 kHz mono anyway; an 88.7 s 44.1 kHz stereo
WAV goes from 15.6 MB to about 280 KB). ``api.trim_silence`` drops silences longer than
``trim_min_silence`` found by the Silero VAD that faster-whisper ships, and returns the map
that puts the service's times back on the recording's clock (sttwatch/timeline.py).

Both decode with PyAV piece by piece and write to a file in a private temporary folder that
the upload then streams and the caller deletes: memory stays flat whatever the length. PyAV
comes with ``sttwatch[local]``; without it both fall back to sending the file as it is,
with one warning.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..offline import unreachable
from ..timeline import Timeline, kept_seconds
from .audio import SAMPLE_RATE, av_input, decoded, probe_duration, stream_chunks
from .media import ACCEPTED_FORMATS, REMUX, MediaInfo, Track, choose_audio, probe, remux

if TYPE_CHECKING:
    from ..sharefile import Opener
    from .media import MediaProbe

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
    track: Track | None = None  # the film's audio track it carries (None: the only one)


def pyav_missing() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return True
    return False


def already_compact(path: Path, opener: Opener | None = None) -> bool:
    """Opus, or anything at no more than ``COMPACT_MAX_BPS`` (low-bitrate AAC, MP3, AMR):
    re-encoding would save little and cost a generation of quality."""
    import av

    try:
        with av_input(path, opener) as container:
            codec = container.streams.audio[0].codec_context.name
            size = container.size
    except (av.error.FFmpegError, IndexError) as exc:
        if unreachable(exc):
            raise
        return True  # not decodable here: let the service judge the file as it is
    if codec == "opus":
        return True
    duration = probe_duration(path, opener)
    return bool(duration) and size * 8 / float(duration or 1) <= COMPACT_MAX_BPS


def sent_as_is(info: MediaInfo) -> bool:
    """An audio file of one track in a container the service reads: nothing to take out."""
    return (not info.has_video and len(info.of_kind("audio")) == 1
            and info.format in ACCEPTED_FORMATS)


def speech_ranges(path: Path, stream: int | None = None,
                  opener: Opener | None = None) -> list[tuple[float, float]]:
    """Where the VAD hears speech, in seconds, over the whole file (decoded in pieces)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=500, speech_pad_ms=0)
    found: list[tuple[float, float]] = []
    for offset, audio in stream_chunks(path, VAD_CHUNK_SECONDS, stream, opener):
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


def encode(path: Path, target: Path, *, opus: bool,
           kept: Sequence[tuple[float, float]] | None = None,
           stream: int | None = None, opener: Opener | None = None) -> None:
    """Write ``path`` (only its ``kept`` stretches, when given) to ``target`` as 16 kHz mono
    Opus in Ogg, or FLAC when ``opus`` is false (trimming without ``compact``: lossless)."""
    import av
    import numpy as np

    bounds = [(round(s * SAMPLE_RATE), round(e * SAMPLE_RATE)) for s, e in kept or ()]
    with av.open(str(target), "w", format="ogg" if opus else "flac") as out:
        ostream: Any = out.add_stream("libopus" if opus else "flac", rate=SAMPLE_RATE)
        ostream.layout = "mono"
        if opus:
            ostream.bit_rate = OPUS_BITRATE
        pos = 0
        for pcm in decoded(path, stream, opener):
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
            for packet in ostream.encode(frame):
                out.mux(packet)
        for packet in ostream.encode(None):
            out.mux(packet)


def _make(path: Path, folder: Callable[[], Path], *, mode: str, trim: bool,
          min_silence: float, language: str | None,
          opener: Opener | None = None, media: MediaProbe | None = None) -> Upload | None:
    info = media() if media is not None else probe(path, opener)
    track = None if info is None else choose_audio(info, language)
    if info is None or track is None:
        return None  # not readable here, or no audio: the service's verdict is the one to see
    plain = sent_as_is(info)
    stream = None if plain else track.index
    kept = None
    if trim:
        duration = probe_duration(path, opener) or 0.0
        speech = speech_ranges(path, stream, opener)
        end = max(duration, speech[-1][1] if speech else 0.0)
        kept = keep_ranges(speech, end, min_silence)
        if not kept or sum(e - s for s, e in kept) >= end - min_silence:
            kept = None  # nothing long enough to cut
    if kept is None:
        if mode == "as_is":
            return None
        if plain and (mode == "audio" or already_compact(path, opener)):
            return None
    stem = folder() / path.stem[:100]
    if kept is None:
        if not plain and track.codec in REMUX and (mode == "audio" or track.codec == "opus"):
            target, mime = remux(path, track, stem, opener)
            return Upload(target, target.name, mime, track=track)
        if mode == "audio" and not plain:
            mode = "compact"  # a codec the service does not take on its own: Opus it is
    compact = mode == "compact"
    target = stem.with_suffix(".ogg" if compact else ".flac")
    encode(path, target, opus=compact, kept=kept, stream=stream, opener=opener)
    return Upload(target, target.name, "audio/ogg" if compact else "audio/flac",
                  timeline_of(kept) if kept else None, track=None if plain else track)


@contextlib.contextmanager
def prepared(path: Path, *, mode: str, trim: bool, min_silence: float,
             language: str | None = None, job_id: int = 0,
             opener: Opener | None = None,
             media: MediaProbe | None = None) -> Iterator[Upload | None]:
    """What to upload for ``path``: None for the file as it is, else a smaller file in a
    private temporary folder, removed when the block ends. ``mode`` is ``api.upload``
    (``audio`` or ``compact``); ``language`` picks the audio track of a film. A file PyAV
    cannot decode goes as it is: the service's verdict on it is the one the user should
    see. ``opener`` reads a recording on a watched share a block at a time with the
    deadline (sharefile.py): a share that is away or hangs raises, the job waits.
    ``media`` is the file's probe when the screen has made it already (media.Probes)."""
    import av

    made: list[Path] = []

    def folder() -> Path:
        """Made only for a file to write: most audio goes as it is (a folder made and
        removed per create was a few per cent of the daemon's CPU)."""
        if not made:
            made.append(Path(tempfile.mkdtemp(prefix="sttwatch-upload-")))  # 0700: ours
        return made[0]

    try:
        try:
            upload = _make(path, folder, mode=mode, trim=trim, min_silence=min_silence,
                           language=language, opener=opener, media=media)
        except (av.error.FFmpegError, IndexError, ValueError) as exc:
            if unreachable(exc):
                raise
            log.warning("upload_not_shrunk", job_id=job_id, path=str(path),
                        reason=f"cannot decode it here: {exc}")
            upload = None
        if upload is not None:
            log.info("upload_prepared", job_id=job_id, path=str(path),
                     bytes=upload.path.stat().st_size,
                     mode=mode, format=upload.path.suffix.lstrip("."),
                     stream=upload.track.index if upload.track else None,
                     language=upload.track.language if upload.track else None,
                     kept_seconds=round(kept_seconds(upload.timeline), 1)
                     if upload.timeline else None)
        yield upload
    finally:
        for tmp in made:
            shutil.rmtree(tmp, ignore_errors=True)
