"""Recordings not worth paying for, found just before their create.

Two reasons end a job as done without sending it: a video that already has subtitles in the
folder's language (``watch[].skip_subtitled``), and a recording in which the voice-activity
detector finds no speech (``api.skip_no_speech``; whisper models invent words for silence,
and the service bills every second). The screen runs at create time, so a sidecar that
arrived after the video still counts.

The outcome travels as the job's result, so a crash between the screen and the end loses
nothing and the finisher needs to know only two things: whether to write transcripts (the
empty ones for no speech; none for a subtitled film) and the note to end with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .offline import unreachable
from .sharefile import Opener, Shares

if TYPE_CHECKING:
    from .backends.media import MediaInfo, MediaProbe
    from .config import Config
    from .store import Plan

PLAIN = Shares()  # files read directly (no watch, no deadline)
log = structlog.get_logger("sttwatch.screen")

SUBTITLE_SUFFIXES = (".srt", ".vtt", ".ass")
MARK = "sttwatch_skipped"  # the result's key saying why nothing was sent
VAD_THRESHOLD = 0.35  # below the VAD's 0.5: a skip needs the detector to be sure
VAD_MIN_SPEECH_MS = 250
VAD_CHUNK_SECONDS = 30.0  # speech found in the first piece ends the look there


@dataclass(frozen=True)
class Skipped:
    """Why a recording is not sent; ``result`` is stored as the job's result."""

    note: str
    result: dict[str, Any]

    @property
    def writes(self) -> bool:
        """Whether the job ends with (empty) transcripts, rather than none."""
        return bool(self.result.get(MARK, {}).get("write"))


def _probed(path: Path, opener: Opener | None, media: MediaProbe | None) -> MediaInfo | None:
    """``path``'s streams: from ``media`` (the job's version, probed once for all its
    stages: media.Probes) when given, else read here."""
    if media is not None:
        return media()
    from .backends.media import probe

    return probe(path, opener)


def subtitles_of(path: Path, language: str | None, shares: Shares = PLAIN,
                 media: MediaProbe | None = None) -> str | None:
    """Where the video ``path`` already has subtitles in ``language`` (any, when None): a
    sidecar's name, or the embedded stream; None when it has none, or is not a video (an
    audio file's NAME.srt is most likely a transcript of ours)."""
    from .backends.media import language_key

    info = _probed(path, shares.open, media)
    if info is None or not info.has_video:
        return None
    want = language_key(language)
    try:
        siblings = shares.call(path, lambda: sorted(p.name for p in path.parent.iterdir()))
    except OSError as exc:
        if unreachable(exc):
            raise
        siblings = []
    stem = path.stem
    for name in siblings:
        low = name.lower()
        if not name.startswith(stem + ".") or not low.endswith(SUBTITLE_SUFFIXES):
            continue
        # What lies between NAME. and .srt: "", "en", "en.forced", "eng.sdh"
        tags = name[len(stem) + 1:].split(".")[:-1]
        if not tags:
            return name  # NAME.srt: no language said
        first = tags[0].lower()
        if len(first) in (2, 3) and first.isalpha() and (
                want is None or language_key(first) == want):
            return name  # NAME.en.srt, NAME.eng.forced.srt
    for track in info.of_kind("subtitle"):
        if want is None or language_key(track.language) == want:
            return f"embedded subtitle stream {track.index}" + (
                f" ({track.language})" if track.language else "")
    return None


def vad_installed() -> bool:
    try:
        import av  # noqa: F401
        import faster_whisper  # noqa: F401
    except ImportError:
        return False
    return True


def hears_speech(path: Path, language: str | None, shares: Shares = PLAIN,
                 media: MediaProbe | None = None) -> bool | None:
    """Whether the VAD hears any speech in the track that would be sent; None when it
    cannot tell (not installed, not decodable): then the recording is sent. The container
    is opened first: faster-whisper (a second of imports) loads only for real audio."""
    try:
        import av
    except ImportError:
        return None
    from .backends.media import choose_audio

    info = _probed(path, shares.open, media)
    track = None if info is None else choose_audio(info, language)
    if track is None or not vad_installed():
        return None
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from .backends.audio import stream_chunks

    options = VadOptions(threshold=VAD_THRESHOLD, min_speech_duration_ms=VAD_MIN_SPEECH_MS)
    heard_any = False
    try:
        for _offset, audio in stream_chunks(path, VAD_CHUNK_SECONDS, track.index,
                                            shares.open):
            heard_any = True
            if get_speech_timestamps(audio, options):
                return True
    except (av.error.FFmpegError, ValueError) as exc:
        if unreachable(exc):
            raise
        return None
    return False if heard_any else None


def empty_result(duration: float | None) -> dict[str, Any]:
    """A transcript with no words, in the service's (Deepgram's) shape, saying why."""
    return {"metadata": {"duration": round(duration or 0.0, 3), "channels": 1,
                         "no_speech": True},
            "results": {"channels": [{"alternatives": [{"transcript": "", "words": []}]}]},
            MARK: {"note": "no speech", "write": True}}


def screen(path: Path, language: str | None, *, skip_subtitled: bool,
           skip_no_speech: bool, job_id: int = 0,
           shares: Shares = PLAIN, media: MediaProbe | None = None) -> Skipped | None:
    """The reason not to send ``path``, or None to send it. ``shares`` reads a recording on
    a watched share through its mount's worker with the deadline (sharefile.py): a share
    that is away or hangs raises (``offline.unreachable``) and the job waits. ``media``:
    the job's version probed once for every stage (media.Probes); None: probed here."""
    if skip_subtitled:
        where = subtitles_of(path, language, shares, media)
        if where is not None:
            note = f"already subtitled ({where})"
            log.info("not_sent", job_id=job_id, path=str(path), reason=note)
            return Skipped(note, {MARK: {"note": note, "write": False}})
    if skip_no_speech and hears_speech(path, language, shares, media) is False:
        from .backends.audio import probe_duration

        log.info("not_sent", job_id=job_id, path=str(path), reason="no speech")
        return Skipped("no speech", empty_result(probe_duration(path, shares.open)))
    return None


def skip_of(result: Any) -> tuple[str, bool] | None:
    """(note, write the transcripts) for a result the screen made; None for a real one."""
    mark = result.get(MARK) if isinstance(result, dict) else None
    if not isinstance(mark, dict):
        return None
    return str(mark.get("note") or "not sent"), bool(mark.get("write"))


def audio_track_of(path: Path, language: str | None,
                   media: MediaProbe | None = None) -> dict[str, Any]:
    """For the json output's header: the audio track heard in a film or a many-track file
    (the one media.choose_audio picks for the upload and the local engine); nothing for a
    plain audio file or one that cannot be read here. ``media``: the job's version as the
    screen probed it (media.Probes); None: probed here."""
    try:
        from .backends.media import choose_audio
        info = _probed(path, None, media)
    except ImportError:
        return {}
    if info is None or (not info.has_video and len(info.of_kind("audio")) <= 1):
        return {}
    track = choose_audio(info, language)
    return {} if track is None else {"audio_stream": {"index": track.index,
                                                      "language": track.language}}


class Screener:
    """The screen with the config's switches (today's, after a reload too):
    ``watch[].skip_subtitled`` of the file's folder, ``api.skip_no_speech``; the folder's
    ``options.language`` from the job's plan."""

    def __init__(self, config: Callable[[], Config], shares: Shares = PLAIN) -> None:
        self._config = config
        self._shares = shares

    def warm(self) -> None:
        """Load what the screen runs on, before the daemon says it is ready: PyAV and the
        voice-activity detector are a third of a second of imports, which the first file
        would wait for otherwise (on a shared library, every host's first file)."""
        cfg = self._config()
        if cfg.api.skip_no_speech and vad_installed():
            import faster_whisper.vad  # noqa: F401

            from .backends import audio, media  # noqa: F401
        elif any(w.skip_subtitled for w in cfg.watches):
            with contextlib.suppress(ImportError):
                import av  # noqa: F401

    def __call__(self, job_id: int, path: Path, plan: Plan,
                 media: MediaProbe | None = None) -> Skipped | None:
        cfg = self._config()
        watch = cfg.watch_for(path)
        language = plan.options.get("language")
        return screen(path, str(language) if language else None,
                      skip_subtitled=watch is not None and watch.skip_subtitled,
                      skip_no_speech=cfg.api.skip_no_speech, job_id=job_id,
                      shares=self._shares, media=media)
