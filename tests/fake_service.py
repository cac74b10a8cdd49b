"""A real local HTTP server speaking the AI/ML API two-step speech-to-text protocol.

Notes: /work/shared/aimlapi-stt.md. Dialect 1 = legacy names (201, waiting/active/failed,
``result``); dialect 2 = newer ones (200, queued/generating/error, ``output``, ``id``, ``error``).
In-process: ``with FakeService(FakeConfig(...)) as svc: ... svc.base_url``. Standalone:
``python tests/fake_service.py --port 0 --task-seconds 2`` prints ``READY <url>``, serves until
SIGTERM. Task state is derived lazily from a monotonic clock on each request (no timer thread).
Bodies over ``STREAM_OVER`` bytes are read in chunks and only their head and tail kept, so a
multi-gigabyte upload costs the fake no memory (``RequestRecord.body_bytes`` counts it all).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import email.parser
import functools
import hashlib
import json
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

MAGIC = b"FAKEAUDIO\n"
WORD_SECONDS = 0.4
COST_HEADERS = {"x-aimlapi-credits-used": "2100", "x-aimlapi-usd-spent": "0.00105"}
STATUS_NAMES = {  # internal state -> status on the wire, per dialect
    1: {"waiting": "waiting", "running": "active", "completed": "completed", "failed": "failed"},
    2: {"waiting": "queued", "running": "generating", "completed": "completed", "failed": "error"},
}
STREAM_OVER = 16 << 20  # bodies larger than this are counted, not kept
KEEP = 256 << 10  # bytes kept from each end of a streamed body (part headers, boundaries)
Json = dict[str, Any]


@dataclasses.dataclass
class FakeConfig:
    """Behaviour switches. Change them mid-run with FakeService.update() (or plain assignment)."""

    key: str = "test-key"
    dialect: int = 1
    task_seconds: float = 0.2  # run time once a task holds a concurrency slot
    concurrency: int | None = None  # max tasks running at once (FIFO queue); None = unlimited
    create_latency: float = 0.0
    # Creates that arrive wait until this is set (then answer as usual): a test holds the
    # service for as long as it needs, instead of racing a latency with a sleep.
    hold_creates: threading.Event | None = None
    # A large create body (over STREAM_OVER) is read up to its first KEEP bytes, then waits
    # until this is set; ``body_held`` says it waits: a test lands a fault mid-upload.
    hold_body: threading.Event | None = None
    body_held: threading.Event = dataclasses.field(default_factory=threading.Event)
    fetch_latency: float = 0.0
    out_of_credits: bool = False  # every create answers 403
    fail_next_creates_429: int = 0
    retry_after: float | None = 1  # Retry-After header on 429s; None = no header
    fail_next_creates_5xx: int = 0  # answer 503
    fail_next_fetches_5xx: int = 0  # answer 502, 500, 502, ...
    reject_over_concurrency: bool = False  # 429 instead of queueing when all slots are taken
    fail_texts: set[str] = dataclasses.field(default_factory=set)
    forget_ids_once: int = 0  # the next N fetches of live ids forget that id (404)
    status_override: str | None = None  # status shown for unfinished tasks, e.g. "paused"
    # Shape of finished results: "deepgram", "assemblyai" (times in ms), "openai" ({"text"}
    # only) or "openai_segments" (verbose, with segments); see result_payload().
    result_shape: str = "deepgram"
    speakers: int = 0  # > 0: sentences are spoken in turn by this many speakers
    # A gateway that quotes the request: every error answer and failed task's message
    # carries the request headers, Authorization included (5xx as an HTML page).
    echo_headers: bool = False
    forbidden_message: str | None = None  # every create answers 403 with this (not credits)
    # Creates whose audio text contains a key answer its status (400, 422, 500...).
    create_status_for_texts: dict[str, int] = dataclasses.field(default_factory=dict)
    # A real (decodable) audio upload is heard as this text: its words are laid over the
    # loud stretches of the audio (see hear()), so word times follow the speech uploaded.
    speech_text: str | None = None
    # A folder where each uploaded file is kept (RequestRecord.upload), for ffprobe.
    keep_uploads: Path | None = None


@dataclasses.dataclass
class RequestRecord:
    kind: str  # "create" | "fetch"
    generation_id: str | None
    text: str | None  # transcript text of the upload ("url <url>" for a URL create)
    fields: Json  # form / JSON fields except the file, including "model"
    filename: str | None
    status_code: int
    headers: dict[str, str]  # lower-case names, Authorization included
    time: float  # time.monotonic() when the request arrived
    body_bytes: int = 0  # bytes of the request body received (streamed ones too)
    file_field: str | None = None  # the multipart field the file came in ("audio" or "file")
    audio_seconds: float | None = None  # length of a real audio upload (speech_text set)
    upload: Path | None = None  # the uploaded file as received (FakeConfig.keep_uploads)


@dataclasses.dataclass
class _Task:
    id: str
    text: str | None
    error: str | None  # failure message (known at create, or decided when it finishes)
    fields: Json
    sha256: str
    created: float
    created_wall: str
    started: float | None = None
    ends: float = 0.0
    finished: float | None = None
    forgotten: bool = False
    echo: str = ""  # the create's headers, quoted in the failure message (echo_headers)
    times: list[tuple[float, float]] | None = None  # word times heard in real audio


def make_fake_audio(path: str | Path, text: str) -> Path:
    """Write a fake audio file whose transcript will be ``text``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MAGIC + text.encode("utf-8"))
    return path


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _error(status: int, message: str, path: str) -> Json:
    return {"message": message, "path": path, "requestId": str(uuid.uuid4()),
            "statusCode": status, "timestamp": _now_iso()}


def quote_headers(headers: dict[str, str]) -> str:
    return "request headers: " + "; ".join(f"{k}: {v}" for k, v in headers.items())


def echoed(status: int, payload: Json, headers: dict[str, str]) -> Json:
    """An error answer as a gateway that quotes the request would give it."""
    quoted = quote_headers(headers)
    if status >= 500:  # a proxy's own error page: not JSON at all
        return {RAW_HTML: f"<html><body><h1>{status}</h1><p>upstream error</p>"
                          f"<pre>{quoted}</pre></body></html>"}
    message = f"{payload.get('message', 'error')} ({quoted})"
    return {**payload, "message": message, "request": {"headers": dict(headers)}}


RAW_HTML = "__raw_html__"  # payload key: send this text as text/html instead of JSON


def read_body(rfile: Any, length: int,
              pause: Callable[[], None] = lambda: None) -> tuple[bytes, int]:
    """The body, or for a large one its head and tail only; with the count of bytes read.
    ``pause`` is called once a large body's head is read."""
    if length <= STREAM_OVER:
        body = rfile.read(length)
        return body, len(body)
    head = rfile.read(KEEP)
    pause()
    got, tail = len(head), b""
    while got < length:
        chunk = rfile.read(min(1 << 20, length - got))
        if not chunk:
            break
        got += len(chunk)
        tail = (tail + chunk)[-KEEP:]
    return head + tail, got


def parse_multipart(body: bytes, ctype: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Split multipart/form-data into ({name: text}, {name: (filename, bytes)})."""
    match = re.search(r'boundary="?([^";]+)"?', ctype)
    if not match:
        raise ValueError("no multipart boundary")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str | None, bytes]] = {}
    for chunk in (b"\r\n" + body).split(b"\r\n--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = email.parser.BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = (part.get_filename(), content)
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


def hear(audio: bytes, text: str) -> tuple[list[tuple[float, float]], float]:
    """Word times for ``text`` spoken in ``audio`` (any format PyAV decodes): the loud 20 ms
    windows, joined over gaps under 0.3 s, are the speech, and the words share it evenly.
    Returns (word times, audio seconds). Needs PyAV (sttwatch[local])."""
    import io

    import av
    import numpy as np

    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=16000)
    pieces = []
    with av.open(io.BytesIO(audio)) as container:
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    pcm = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    win = 320
    n = len(pcm) // win
    rms = np.sqrt((pcm[: n * win].reshape(n, win) ** 2).mean(axis=1)) if n else np.zeros(0)
    regions: list[list[float]] = []
    for i in np.flatnonzero(rms > 300):
        start, end = i * win / 16000, (i + 1) * win / 16000
        if regions and start - regions[-1][1] < 0.3:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    seconds = len(pcm) / 16000
    tokens = text.split()
    voiced = sum(e - s for s, e in regions)
    if not regions or not tokens:
        return [], seconds

    def at(v: float) -> float:  # voiced time -> audio time
        for s, e in regions:
            if v <= e - s:
                return s + v
            v -= e - s
        return regions[-1][1]

    step = voiced / len(tokens)
    return [(round(at(i * step + 1e-6), 3), round(at((i + 1) * step), 3))
            for i in range(len(tokens))], seconds


def transcript_payload(task: _Task) -> Json:
    """The finished result in Deepgram's shape (see the protocol notes)."""
    text = task.text or ""
    times = task.times or [(i * WORD_SECONDS, (i + 1) * WORD_SECONDS)
                           for i in range(len(text.split()))]
    words = [{"word": re.sub(r"[^\w'-]", "", tok).lower() or tok, "punctuated_word": tok,
              "start": round(start, 3), "end": round(end, 3),
              "confidence": 0.98} for tok, (start, end) in zip(text.split(), times, strict=True)]
    metadata = {"request_id": str(uuid.uuid5(uuid.NAMESPACE_URL, task.id)), "sha256": task.sha256,
                "created": task.created_wall,
                "duration": round(times[-1][1] if times else 0.0, 3),
                "channels": 1, "models": [str(task.fields.get("model", ""))]}
    alternative = {"transcript": text, "confidence": 0.98, "words": words}
    language = task.fields.get("language") or "en"
    return {"metadata": metadata, "results": {"channels": [
        {"alternatives": [alternative], "detected_language": language}]}}


def _speaker_of_words(text: str, speakers: int) -> list[int | None]:
    """Speaker per word: sentences are spoken in turn when ``speakers`` > 0."""
    out: list[int | None] = []
    sentence = 0
    for tok in text.split():
        out.append(sentence % speakers if speakers > 0 else None)
        sentence += tok.endswith((".", "?", "!"))
    return out


def result_payload(task: _Task, shape: str = "deepgram", speakers: int = 0) -> Json:
    """The finished result in the shape of one model family, with speakers when asked."""
    base = transcript_payload(task)
    words = base["results"]["channels"][0]["alternatives"][0]["words"]
    who = _speaker_of_words(task.text or "", speakers)
    turns: list[Json] = []  # sentences: start, end, text, speaker
    for word, spk in zip(words, who, strict=True):
        if spk is not None:
            word["speaker"] = spk
        if turns and not turns[-1]["text"].endswith((".", "?", "!")):
            turns[-1]["end"] = word["end"]
            turns[-1]["text"] += " " + word["punctuated_word"]
        else:
            turns.append({"start": word["start"], "end": word["end"], "speaker": spk,
                          "text": word["punctuated_word"]})
    text, duration = task.text or "", base["metadata"]["duration"]
    if shape == "deepgram":
        if speakers > 0:
            base["results"]["utterances"] = [
                {"start": t["start"], "end": t["end"], "transcript": t["text"],
                 "speaker": t["speaker"], "confidence": 0.98, "channel": 0} for t in turns]
        return base
    if shape == "assemblyai":
        letter = {n: chr(ord("A") + n) for n in range(max(speakers, 1))}
        aai_words = [{"text": w["punctuated_word"], "start": round(w["start"] * 1000),
                      "end": round(w["end"] * 1000), "confidence": w["confidence"],
                      "speaker": letter.get(w.get("speaker", -1))} for w in words]
        utterances = [{"text": t["text"], "start": round(t["start"] * 1000),
                       "end": round(t["end"] * 1000), "confidence": 0.98,
                       "speaker": letter[t["speaker"]]} for t in turns] if speakers > 0 else None
        return {"id": task.id, "status": "completed", "text": text, "words": aai_words,
                "utterances": utterances, "language_code": "en_us",
                "audio_duration": int(duration) + 1, "confidence": 0.98}
    if shape == "openai":
        return {"text": text}
    if shape == "openai_segments":
        return {"task": "transcribe", "language": "english", "duration": duration,
                "text": text, "segments": [
                    {"id": n, "start": t["start"], "end": t["end"], "text": " " + t["text"],
                     **({"speaker": chr(ord("A") + t["speaker"])} if speakers > 0 else {})}
                    for n, t in enumerate(turns)]}
    raise ValueError(f"unknown result shape {shape!r}")


class FakeService:
    """The fake server: ``with FakeService(cfg) as svc`` or ``svc.start()`` / ``svc.stop()``."""

    def __init__(self, config: FakeConfig | None = None, port: int = 0) -> None:
        self.config = config or FakeConfig()
        self.lock = threading.RLock()
        self.records: list[RequestRecord] = []
        self._tasks: dict[str, _Task] = {}
        self._waiting: collections.deque[_Task] = collections.deque()
        self._max_running = 0
        self._fetch_5xx_count = 0
        self._arrived = 0
        self._kept = 0
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.service = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeService:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)  # short poll: quick shutdown
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def update(self, **changes: Any) -> None:
        """Change config fields atomically with respect to request handling."""
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise AttributeError(name)
                setattr(self.config, name, value)

    def forget_all(self) -> None:
        with self.lock:
            for task in self._tasks.values():
                task.forgotten = True

    # ---- helpers for assertions ------------------------------------------------------------
    def creates(self) -> list[RequestRecord]:
        return self._of_kind("create")

    def fetches(self) -> list[RequestRecord]:
        return self._of_kind("fetch")

    def _of_kind(self, kind: str) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.records if r.kind == kind]

    def arrived(self) -> int:
        """Requests received so far, answered or not."""
        with self.lock:
            return self._arrived

    def all_answered(self) -> bool:
        """Every request received has been handled and recorded (no handler is still busy)."""
        with self.lock:
            return self._arrived == len(self.records)

    def finish_running(self) -> None:
        """Tasks already running finish now; waiting ones then start as usual."""
        with self.lock:
            now = time.monotonic()
            for task in self._running():
                task.ends = min(task.ends, now)
            self._advance(now)

    def creates_by_text(self, accepted_only: bool = True) -> collections.Counter[str | None]:
        """Creates per text; by default only those that made a task (2xx)."""
        texts = (r.text for r in self.creates() if not accepted_only or r.status_code < 300)
        return collections.Counter(texts)

    def fetches_for(self, generation_id: str) -> list[RequestRecord]:
        return [r for r in self.fetches() if r.generation_id == generation_id]

    def finished_at(self, generation_id: str) -> float | None:
        """Monotonic time the task finished (None while unfinished or unknown)."""
        with self.lock:
            self._advance(time.monotonic())
            task = self._tasks.get(generation_id)
            return task.finished if task else None

    @property
    def max_running_seen(self) -> int:
        with self.lock:
            self._advance(time.monotonic())
            return self._max_running

    # ---- scheduling (lock held) ------------------------------------------------------------
    def _running(self) -> list[_Task]:
        return [t for t in self._tasks.values()
                if t.started is not None and t.finished is None and not t.forgotten]

    def _fill(self, at: float) -> None:
        limit = self.config.concurrency
        while self._waiting and (limit is None or len(self._running()) < limit):
            task = self._waiting.popleft()
            if not task.forgotten:
                task.started = max(at, task.created)
                task.ends = task.started + self.config.task_seconds
                self._max_running = max(self._max_running, len(self._running()))

    def _advance(self, now: float) -> None:
        """Finish due tasks in end-time order; each freed slot starts the next waiting task."""
        while due := [t for t in self._running() if t.ends <= now]:
            task = min(due, key=lambda t: t.ends)
            task.finished = task.ends
            hit = next((s for s in sorted(self.config.fail_texts) if s in (task.text or "")), None)
            if task.error is None and hit is not None:
                task.error = f"Generation failed: {hit}"
            if task.error is not None and task.echo and task.echo not in task.error:
                task.error = f"{task.error} ({task.echo})"
            self._fill(task.ends)
        self._fill(now)

    # ---- endpoints -------------------------------------------------------------------------
    def handle_create(self, path: str, headers: dict[str, str], body: bytes,
                      body_bytes: int | None = None) -> tuple[int, Json]:
        arrived = time.monotonic()
        with self.lock:
            self._arrived += 1
        hold = self.config.hold_creates
        if hold is not None:
            hold.wait(60)
        time.sleep(self.config.create_latency)
        fields: Json = {}
        filename, audio, text, bad, field = None, None, None, "", None
        heard: list[tuple[float, float]] | None = None
        audio_seconds: float | None = None
        try:
            ctype = headers.get("content-type", "")
            if ctype.startswith("multipart/form-data"):
                fields, files = parse_multipart(body, ctype)
                field = next((f for f in ("audio", "file") if f in files), None)
                filename, audio = files[field] if field else (None, None)
                if audio is not None and audio.startswith(MAGIC):
                    text = audio[len(MAGIC):].decode("utf-8", "replace").strip()
                elif audio and self.config.speech_text is not None:
                    try:
                        heard, audio_seconds = hear(audio, self.config.speech_text)
                        text = self.config.speech_text
                    except Exception:  # not audio PyAV can read: the usual failed task
                        heard = None
                bad = "" if audio else "audio must be a non-empty file"
            else:
                fields = json.loads(body or b"{}")
                url = fields.get("url") if isinstance(fields, dict) else None
                if not isinstance(url, str) or not url:
                    raise ValueError("url or audio is required")
                text = "url " + url
        except ValueError as exc:  # includes json.JSONDecodeError
            fields, bad = fields if isinstance(fields, dict) else {}, str(exc)
        if not bad and not fields.get("model"):
            bad = "model is required"
        record = RequestRecord("create", None, text, dict(fields), filename, 0, headers, arrived,
                               len(body) if body_bytes is None else body_bytes)
        record.file_field = field
        record.audio_seconds = audio_seconds
        if audio and self.config.keep_uploads is not None:
            with self.lock:
                self._kept += 1
                kept = self._kept
            name = Path(filename or "upload").name
            record.upload = self.config.keep_uploads / f"{kept:04d}-{name}"
            record.upload.write_bytes(audio)
        cfg = self.config
        forced = next((code for part, code in sorted(cfg.create_status_for_texts.items())
                       if text is not None and part in text), None)
        with self.lock:
            self._advance(time.monotonic())
            if headers.get("authorization") != f"Bearer {cfg.key}":
                status, payload = 401, _error(401, "Invalid API key", path)
            elif cfg.out_of_credits:
                status, payload = 403, _error(403, "Insufficient credits", path)
            elif cfg.forbidden_message is not None:
                status, payload = 403, _error(403, cfg.forbidden_message, path)
            elif forced is not None:
                status, payload = forced, _error(forced, f"Forced answer {forced}", path)
            elif cfg.fail_next_creates_429 > 0:
                cfg.fail_next_creates_429 -= 1
                status, payload = 429, _error(429, "Too many requests", path)
            elif cfg.fail_next_creates_5xx > 0:
                cfg.fail_next_creates_5xx -= 1
                status, payload = 503, _error(503, "Service temporarily unavailable", path)
            elif (cfg.reject_over_concurrency and cfg.concurrency is not None
                  and len(self._running()) + len(self._waiting) >= cfg.concurrency):
                status, payload = 429, _error(429, "Too many concurrent generations", path)
            elif bad:
                status, payload = 400, {**_error(400, "Body validation error!", path),
                                        "errors": [bad]}
            else:
                error = None if text is not None else "Unsupported audio format"
                digest = hashlib.sha256(audio or body).hexdigest()
                task = _Task(str(uuid.uuid4()), text, error, dict(fields), digest,
                             time.monotonic(), _now_iso())
                task.echo = quote_headers(headers) if cfg.echo_headers else ""
                task.times = heard
                self._tasks[task.id] = task
                self._waiting.append(task)
                self._fill(task.created)
                record.generation_id = task.id
                status, payload = (201, {"generation_id": task.id}) if cfg.dialect == 1 else (
                    200, {"generation_id": task.id, "status": "queued"})
            record.status_code = status
            self.records.append(record)
        if cfg.echo_headers and status >= 400:
            payload = echoed(status, payload, headers)
        return status, payload

    def handle_fetch(self, path: str, gen_id: str, headers: dict[str, str]) -> tuple[int, Json]:
        arrived = time.monotonic()
        with self.lock:
            self._arrived += 1
        time.sleep(self.config.fetch_latency)
        cfg = self.config
        with self.lock:
            self._advance(time.monotonic())
            task = self._tasks.get(gen_id)
            payload: Json
            if headers.get("authorization") != f"Bearer {cfg.key}":
                status, payload = 401, _error(401, "Invalid API key", path)
            elif cfg.fail_next_fetches_5xx > 0:
                cfg.fail_next_fetches_5xx -= 1
                self._fetch_5xx_count += 1
                status = 502 if self._fetch_5xx_count % 2 else 500
                payload = _error(status, "Bad gateway" if status == 502 else "Server error", path)
            elif task is None or task.forgotten or cfg.forget_ids_once > 0:
                if task is not None and not task.forgotten:
                    cfg.forget_ids_once -= 1
                    task.forgotten = True
                    self._fill(time.monotonic())
                status, payload = 404, {"message": "Generation not found", "statusCode": 404}
            else:
                state = ("waiting" if task.started is None else "running" if task.finished is None
                         else "failed" if task.error else "completed")
                wire = STATUS_NAMES[cfg.dialect][state]
                if state in ("waiting", "running") and cfg.status_override:
                    wire = cfg.status_override
                result = (result_payload(task, cfg.result_shape, cfg.speakers)
                          if state == "completed" else None)
                failed = state == "failed"
                error = {"name": "GenerationError", "message": task.error} if failed else None
                status, payload = 200, (
                    {"status": wire, "result": result, **({"error": error} if error else {})}
                    if cfg.dialect == 1 else
                    {"id": task.id, "generation_id": task.id, "status": wire, "output": result,
                     "error": error})
            text = task.text if task else None
            self.records.append(
                RequestRecord("fetch", gen_id, text, {}, None, status, headers, arrived))
        if cfg.echo_headers and status >= 400:
            payload = echoed(status, payload, headers)
        return status, payload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    service: FakeService


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # http.server writes the head and the body of an answer separately: without this,
        # Nagle's algorithm holds the body until the client's delayed ACK, 40 ms an answer,
        # which is the fake's pace, not the daemon's (a real server sends them together).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: Json, extra: dict[str, str] | None = None) -> None:
        html = payload.get(RAW_HTML)
        data = html.encode() if isinstance(html, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8" if isinstance(html, str)
                         else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.headers.get("X-Client-Request-Id"):
            self.send_header("X-Client-Request-Id", self.headers["X-Client-Request-Id"])
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        svc = cast(_Server, self.server).service
        path = self.path.split("?")[0]
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # body left unread; the client sends Content-Length
            return self._send(411, _error(411, "Length Required", path))
        length = int(self.headers.get("Content-Length") or 0)
        body, got = read_body(self.rfile, length, functools.partial(_pause, svc.config))
        if got < length:  # the client gave up mid-body: no request, as for a real server
            self.close_connection = True
            return None
        if path != "/v1/stt/create":
            return self._send(404, _error(404, f"Cannot POST {path}", path))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = svc.handle_create(path, headers, body, got)
        extra = dict(COST_HEADERS) if status < 300 else {}
        if status == 429 and svc.config.retry_after is not None:
            extra["Retry-After"] = f"{svc.config.retry_after:g}"
        self._send(status, payload, extra)

    def do_GET(self) -> None:
        svc = cast(_Server, self.server).service
        path = self.path.split("?")[0]
        match = re.fullmatch(r"/v1/stt/([^/]+)", path)
        if not match or match.group(1) == "create":
            return self._send(404, _error(404, f"Cannot GET {path}", path))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(*svc.handle_fetch(path, match.group(1), headers))


def _pause(config: FakeConfig) -> None:
    if config.hold_body is not None:
        config.body_held.set()
        config.hold_body.wait(60)


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda value: None if value.lower() == "none" else kind(value)


def main(argv: list[str] | None = None) -> None:
    """Standalone: every FakeConfig field is a flag (--task-seconds 2, --fail-text boom, ...)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    for field in dataclasses.fields(FakeConfig):
        flag, type_name = "--" + field.name.replace("_", "-"), str(field.type)
        if field.name == "fail_texts":
            parser.add_argument("--fail-text", dest="fail_texts", action="append", default=[])
        elif field.name == "create_status_for_texts":
            parser.add_argument("--create-status-for-text", dest=field.name, action="append",
                                default=[], metavar="TEXT=CODE")
        elif type_name == "bool":
            parser.add_argument(flag, action="store_true")
        else:
            kind = {"str": str, "int": int}.get(type_name.split(" ")[0], float)
            optional = "None" in type_name
            parser.add_argument(flag, type=_optional(kind) if optional else kind,
                                default=field.default, help="'none' allowed" if optional else None)
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    forced = dict(item.rsplit("=", 1) for item in args["create_status_for_texts"])
    config = FakeConfig(**{**args, "fail_texts": set(args["fail_texts"]),
                           "create_status_for_texts": {k: int(v) for k, v in forced.items()}})
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with FakeService(config, port=port) as svc:
        print(f"READY {svc.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()


if __name__ == "__main__":
    main()
