"""Decoding long recordings piece by piece, so an hour of audio is never in memory at once.

faster-whisper's own ``decode_audio`` holds the whole file decoded (twice, briefly: the raw
16-bit buffer and its float32 copy) and then builds features for all of it; for an hour that
is gigabytes. Here the file is decoded with the same resampler settings (16 kHz mono s16,
then /32768) into pieces of about ``chunk_seconds``, each cut at the quietest moment near its
end so no word is split at a boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sharefile import Opener

SAMPLE_RATE = 16000
SEARCH_SECONDS = 5.0  # where to look for a quiet cut before the nominal chunk end
WINDOW = SAMPLE_RATE // 10  # 100 ms energy windows


@contextlib.contextmanager
def av_input(path: Path, opener: Opener | None = None) -> Iterator[Any]:
    """``path`` opened by PyAV for reading: by its name, or through ``opener`` (a recording
    on a watched share: every block read on its mount's worker with the deadline,
    sharefile.py), so a share that hangs mid-probe or mid-decode raises ``ShareHung`` out of
    PyAV instead of holding the thread."""
    import av

    if opener is None:
        with av.open(str(path), metadata_errors="ignore") as container:
            yield container
        return
    with opener(path) as fh, av.open(fh, metadata_errors="ignore",
                                     buffer_size=1 << 16) as container:
        yield container


def probe_duration(path: Path, opener: Opener | None = None) -> float | None:
    """The container's own idea of the duration, without decoding; None when unknown."""
    import av

    try:
        with av_input(path, opener) as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, IndexError):
        return None
    return None


def quiet_cut(audio: Any, start: int, end: int) -> int:
    """The sample index at the centre of the quietest 100 ms window in [start, end)."""
    import numpy as np

    region = audio[start:end].astype(np.float32)
    n = len(region) // WINDOW
    if n == 0:
        return end
    energy = (region[: n * WINDOW].reshape(n, WINDOW) ** 2).mean(axis=1)
    return start + int(np.argmin(energy)) * WINDOW + WINDOW // 2


def decoded(path: Path, stream: int | None = None,
            opener: Opener | None = None) -> Iterator[Any]:
    """The recording (its audio stream at container index ``stream``; None: the first) as
    16 kHz mono s16 sample arrays, in decoder-sized pieces. A damaged frame is skipped, as
    faster-whisper does; the resampler's tail comes last."""
    import av

    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono",
                                                  rate=SAMPLE_RATE)
    with av_input(path, opener) as container:
        frames = container.decode(audio=0) if stream is None else container.decode(
            container.streams[stream])
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.InvalidDataError:
                continue
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


def stream_chunks(path: Path, chunk_seconds: float, stream: int | None = None,
                  opener: Opener | None = None) -> Iterator[tuple[float, Any]]:
    """Yield ``(offset_seconds, float32 samples)`` pieces of the decoded recording."""
    import numpy as np

    target = int(chunk_seconds * SAMPLE_RATE)
    search = int(SEARCH_SECONDS * SAMPLE_RATE)
    pending: list[Any] = []
    buffered = 0
    offset = 0
    for samples in decoded(path, stream, opener):
        pending.append(samples)
        buffered += samples.shape[0]
        if buffered >= target + search:
            audio = np.concatenate(pending)
            cut = quiet_cut(audio, target - search, target + search)
            yield offset / SAMPLE_RATE, audio[:cut].astype(np.float32) / 32768.0
            offset += cut
            pending, buffered = [audio[cut:]], audio.shape[0] - cut
    if pending:
        audio = np.concatenate(pending)
        if audio.shape[0]:
            yield offset / SAMPLE_RATE, audio.astype(np.float32) / 32768.0
