"""The AI/ML API two-step STT client: ``POST /stt/create`` then ``GET /stt/{generation_id}``.

The provider's docs contradict themselves (status names, ``result`` vs ``output``, ``id`` vs
``generation_id``, 200 vs 201); every documented variant is accepted here, as listed in
shared/aimlapi-stt.md. Anything not understood fails with a clear message and an excerpt of
the raw body, never with the request headers.

Every answer passes through ``_send``, which turns it into an ``Answer`` whose text and
headers have the key and any ``Bearer`` token redacted (gateways quote the request headers
in their error pages): nothing after that point, no exception, stored error, sidecar or
``status`` line, can carry the key.

Requests travel by http.py: a small HTTP/1.1 client of our own on a direct connection
(urllib3 over ``http.client`` cost more CPU than the rest of a fetch), urllib3 through a
proxy; requests stays for the one-off preflight. Uploads are streamed from disk
(multipart.py, a chunk at a time), so memory stays flat whatever the file's size.
While the body is being sent, each socket write may take up to the connect timeout; once it
is sent, the service may take a while to take the upload in before it answers, so the read
timeout grows by ``size / UPLOAD_FLOOR_BPS`` (an assumed floor of 1 MB/s for the service's
side). ``create_deadline`` is the whole allowance.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import mimetypes
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ..apikey import redact
from ..errors import (
    AuthError,
    BackendUnavailable,
    CreditsExhausted,
    ExpiredError,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from ..profiles import profile_for
from ..sharefile import plain_open
from . import Backend, Created, Finding, Request, Status, TaskState
from .http import Broken, NotSent, Reply, Transport, transport_for
from .multipart import Multipart, SourceChanged, SourceUnreadable
from .shrink import Upload, prepared, pyav_missing

if TYPE_CHECKING:
    from ..config import Config

log = structlog.get_logger("sttwatch.aimlapi")

RUNNING = frozenset({"waiting", "active", "queued", "generating", "processing", "pending",
                     "in_progress", "running", "created"})
DONE = frozenset({"completed", "complete", "succeeded", "success", "done", "finished"})
FAILED = frozenset({"error", "failed", "cancelled", "canceled", "timeout", "expired"})
BAD_FILE = frozenset({400, 413, 415, 422})
COST_HEADERS = ("x-aimlapi-credits-used", "x-aimlapi-usd-spent")
# A 403 whose body says any of these is an account that cannot pay, not a bad key (the
# provider documents 403 as "out of credits"; other 403s stay AuthError). "insufficient"
# only when it is not about permissions.
CREDIT_WORDS = re.compile(r"(?i)credit|balance|quota|billing|payment|top[ -]?up|"
                          r"insufficient(?!\W+(?:permission|privilege|scope|right|access))")
UPLOAD_FLOOR_BPS = 1 << 20  # slowest take-in assumed for the service: 1 MB/s
PROGRESS_MIN_BYTES = 64 << 20  # smaller uploads are over before progress would matter
PROGRESS_STEP = 10  # per cent between upload_progress events
UploadProgress = Callable[[int, int, int], None]  # (job_id, bytes sent, total bytes)


def _text(resp: Reply) -> str:
    """The body as text: the charset the answer names, else UTF-8 (a JSON API's)."""
    charset = "utf-8"
    for part in resp.headers.get("content-type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip('"')
    try:
        return resp.body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return resp.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the rest of this module sees it: already redacted."""

    status_code: int
    reason: str
    text: str
    headers: Mapping[str, str]  # lower-case names

    @classmethod
    def of(cls, resp: Reply, key: str) -> Answer:
        """The one place service text enters the program: the key is removed here. The
        header values are looked at together first: when redacting all of them at once
        changes nothing, neither would redacting each (a key or a token in one value is
        in their joining too), and they are taken as they are."""
        headers = dict(resp.headers)
        joined = "\n".join(headers.values())
        if redact(joined, key) != joined:
            headers = {k: redact(v, key) for k, v in headers.items()}
        return cls(resp.status, redact(resp.reason or "", key), redact(_text(resp), key),
                   headers)

    def json(self) -> Any:
        return json.loads(self.text)


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def error_message(resp: Answer) -> str:
    """The service's own words from either error body shape, else a body excerpt."""
    try:
        body = resp.json()
    except ValueError:
        return _excerpt(resp.text) or resp.reason or f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        err = body.get("error")
        details = body.get("errors") or body.get("details")
        extra = f" ({_excerpt(json.dumps(details), 200)})" if details else ""
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"]) + extra
        for k in ("message", "title", "detail"):
            if body.get(k):
                msg = body[k]
                return ("; ".join(map(str, msg)) if isinstance(msg, list) else str(msg)) + extra
    return _excerpt(resp.text)


def retry_after(resp: Answer) -> float | None:
    """``Retry-After`` as seconds, from either its number or its HTTP-date form."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    return max(0.0, when.timestamp() - time.time())


def raise_for_status(resp: Answer) -> None:
    """Map an HTTP answer onto our error types; 2xx passes."""
    code = resp.status_code
    if code < 400:
        return
    msg = error_message(resp)
    if code == 403 and CREDIT_WORDS.search(resp.text):
        raise CreditsExhausted(code, msg)
    if code in (401, 403):
        raise AuthError(code, msg)
    if code == 429:
        raise RateLimited(f"HTTP 429: {msg}", retry_after=retry_after(resp), status=code)
    if code in BAD_FILE:
        raise PermanentError(f"HTTP {code}: {msg}")
    if code == 404:
        raise ExpiredError(f"HTTP 404: {msg}")
    if code >= 500 or code in (408, 409, 425):
        raise TransientError(f"HTTP {code}: {msg}", retry_after=retry_after(resp), status=code)
    raise PermanentError(f"HTTP {code}: {msg}")


def parse_status(body: Any) -> Status:
    """Read a fetch answer in any documented dialect."""
    if not isinstance(body, dict):
        raise TransientError(f"unexpected answer: {_excerpt(json.dumps(body))}")
    raw = body.get("status")
    status = str(raw).lower() if raw is not None else None
    payload = body.get("result", body.get("output"))
    if payload is None and "results" in body:  # the legacy single-call shape: no envelope
        payload = body
    if status in FAILED:
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return Status(TaskState.FAILED, error=str(msg or f"task ended with status {status}"),
                      raw_status=status)
    if status in DONE or (status is None and isinstance(payload, dict)):
        if not isinstance(payload, dict):
            raise PermanentError(f"finished without a result: {_excerpt(json.dumps(body))}")
        return Status(TaskState.DONE, result=payload, raw_status=status)
    return Status(TaskState.RUNNING, raw_status=status, known_status=status in RUNNING)


def _json_body(resp: Answer, what: str, error: type[TransientError]) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise error(f"{what} answered non-JSON: {_excerpt(resp.text)}") from None


def _is_retryable(exc: BaseException) -> bool:
    # A 429 is the service saying our concurrency is too high: the pipeline holds back
    # instead of burning retries on it. A create with an unknown outcome may have made a
    # task: sending it again blindly could bill twice.
    return isinstance(exc, TransientError) and not isinstance(exc, (RateLimited,
                                                                     OutcomeUnknown))


def _wait(base: Callable[[RetryCallState], float],
          cap: float) -> Callable[[RetryCallState], float]:
    """Honour ``Retry-After`` when the service sent one, within our cap (a retrying thread
    must not sleep for an hour); jittered exponential backoff otherwise."""
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        return min(cap, float(hinted)) if hinted is not None else base(state)
    return wait


def _form_fields(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """Multipart wants strings: booleans as true/false, lists as repeated fields."""
    out: list[tuple[str, str]] = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out.extend((key, str(v)) for v in value)
        else:
            out.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return out


def _progress(job_id: int, path: str, total: int,
              listener: UploadProgress | None) -> Callable[[int], None]:
    """Called with the bytes handed out so far on every chunk of the upload: tells the
    listener, and logs every ``PROGRESS_STEP`` per cent of a large upload."""
    logged = [0]

    def on_sent(sent: int) -> None:
        if listener is not None:
            listener(job_id, sent, total)
        if total >= PROGRESS_MIN_BYTES:
            step = sent * 100 // total // PROGRESS_STEP * PROGRESS_STEP
            if step > logged[0]:
                logged[0] = step
                log.info("upload_progress", job_id=job_id, path=path, bytes=sent,
                         total=total, percent=step)

    return on_sent


class RequestObserver(Protocol):
    def request(self, endpoint: str, code: int | None) -> None: ...

    def retry(self) -> None: ...


class AimlApiBackend(Backend, kind="aimlapi"):
    """The AI/ML API; one transport (http.py) for every thread, every call with a
    timeout."""

    def __init__(self, base_url: str, api_key: str, model: str, *,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0, retries: int = 5,
                 sleep: Callable[[float], None] = time.sleep, max_backoff: float = 30.0,
                 on_upload_progress: UploadProgress | None = None, compact: bool = False,
                 trim_silence: bool = False, trim_min_silence: float = 3.0,
                 upload: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        # api.upload: as_is | audio | compact (``compact=True`` is the older spelling).
        self._mode = upload or ("compact" if compact else "as_is")
        self._trim = trim_silence
        self._min_silence = trim_min_silence
        self._shrink_off = False  # PyAV is missing: send files as they are (warned once)
        self._key = api_key
        self._model = model
        self._timeouts = (connect_timeout, read_timeout)
        self._on_upload_progress = on_upload_progress
        self._pool_lock = threading.Lock()
        self._transport: Transport | None = None
        self._retrying = Retrying(
            retry=retry_if_exception(_is_retryable), stop=stop_after_attempt(retries),
            wait=_wait(wait_random_exponential(multiplier=0.5, max=max_backoff), max_backoff),
            sleep=sleep, reraise=True,
            before_sleep=self._before_retry)
        # Told of every HTTP answer (endpoint, status; None: no answer) and every retry:
        # the metrics (sttwatch/metrics.py) set it; nothing else in here depends on it.
        self.observer: RequestObserver | None = None

    def _before_retry(self, s: RetryCallState) -> None:
        log.warning("request_retry", attempt=s.attempt_number,
                    error=str(s.outcome.exception()) if s.outcome else None)
        if self.observer is not None:
            self.observer.retry()

    @classmethod
    def from_config(cls, cfg: Config, key: str | None) -> Backend:
        if not key:
            from ..apikey import key_source
            where = key_source(cfg)
            raise BackendUnavailable(f"backend aimlapi needs an API key in {where}")
        api = cfg.api
        return cls(api.base_url, key, api.model, connect_timeout=api.connect_timeout,
                   read_timeout=api.read_timeout, retries=api.retries,
                   upload=api.upload, trim_silence=api.trim_silence,
                   trim_min_silence=api.trim_min_silence)

    @classmethod
    def needs_key(cls) -> bool:
        return True

    @classmethod
    def preflight(cls, cfg: Config, key: str | None) -> list[Finding]:
        """A create without audio: the service checks the key and the balance before the
        body, so 401 is the key, 403 with words of credits the account, 400/422 (no audio)
        both fine. Nothing is transcribed or billed."""
        from ..apikey import key_source
        if not key:
            return [Finding(False, f"backend aimlapi has no API key ({key_source(cfg)})",
                            "export AIMLAPI_KEY=... (with api.api_key_env: AIMLAPI_KEY) or "
                            "set api.api_key_file")]
        import requests  # the one-off check only: the daemon's requests go by http.py

        base = cfg.api.base_url
        try:
            resp = requests.post(f"{base.rstrip('/')}/stt/create",
                                 headers={"Authorization": f"Bearer {key}"},
                                 json={"model": cfg.api.model},
                                 timeout=(cfg.api.connect_timeout, cfg.api.read_timeout))
        except requests.RequestException as exc:
            return [Finding(False, f"cannot reach {base} ({type(exc).__name__})",
                            "check the network, a proxy, or api.base_url")]
        code = resp.status_code
        said = redact(resp.text, key)
        if code == 403 and CREDIT_WORDS.search(said):
            return [Finding(False, f"the account is out of credits (HTTP 403: "
                                   f"{_excerpt(said, 120)})",
                            "top up the account's credits; the key itself is accepted")]
        if code in (401, 403):
            return [Finding(False, f"the service refused the API key (HTTP {code})",
                            f"set a valid key ({key_source(cfg)})")]
        if code in (400, 422):
            return [Finding(True, f"the service at {base} accepts the key, and the account "
                                  "may create tasks")]
        if code >= 500:
            return [Finding(False, f"the service answered HTTP {code}", "try again later")]
        if code < 300:
            return [Finding(True, f"the service at {base} accepts the key (it took an empty "
                                  "create)")]
        return [Finding(False, f"the service answered a create with HTTP {code}",
                        "check api.base_url (it should end in /v1)")]

    @property
    def model_name(self) -> str:
        return self._model

    def _way(self) -> Transport:
        """The transport to the base URL, made at the first request (and again after
        ``close``): the environment's proxy settings are read then, once."""
        way = self._transport
        if way is None:
            with self._pool_lock:
                if self._transport is None:
                    self._transport = transport_for(self._base)
                way = self._transport
        return way

    def upload_read_timeout(self, size: int) -> float:
        """The read timeout for an upload of ``size`` bytes: the configured one, plus the
        time the service may take to take the upload in at ``UPLOAD_FLOOR_BPS``."""
        return self._timeouts[1] + size / UPLOAD_FLOOR_BPS

    def create_deadline(self, size: int) -> float:
        """Seconds a create of ``size`` bytes may take in all before it counts as stuck
        (connect, the upload's take-in allowance, the answer)."""
        return self._timeouts[0] + self.upload_read_timeout(size)

    def _send(self, method: str, path: str, *, timeouts: tuple[float, float] | None = None,
              creates: bool = False, headers: Mapping[str, str] | None = None,
              data: Multipart | None = None, json_body: Any = None) -> Answer:
        """One request to ``path`` under the base URL (``timeouts``: connect and read, the
        configured ones when None), its answer redacted, every transport failure as our
        error types."""
        sent = {"Authorization": f"Bearer {self._key}", **(headers or {})}
        endpoint = "create" if creates else "fetch"
        body: bytes | Multipart | None = data
        length = 0 if data is None else data.len
        if json_body is not None:
            body = json.dumps(json_body).encode()
            length = len(body)
            sent["Content-Type"] = "application/json"
        try:
            reply = self._way().request(method, path, sent, body, length,
                                        timeouts or self._timeouts)
        except (NotSent, Broken) as exc:
            if self.observer is not None:
                self.observer.request(endpoint, None)
            if creates and isinstance(exc, Broken):
                raise OutcomeUnknown(f"create {exc.what} after sending ({exc.cause}); "
                                     "the task may exist") from None
            raise TransientError(f"{exc.what}: {exc.cause}") from None
        answer = Answer.of(reply, self._key)
        if self.observer is not None:
            self.observer.request(endpoint, answer.status_code)
        return answer

    def create(self, request: Request) -> Created:
        model = request.model or self._model
        profile = profile_for(model)  # the model family's field names and option names
        fields: dict[str, Any] = {"model": model, **profile.create_fields(request.options)}
        headers = {"X-Client-Request-Id": f"sttwatch-job-{request.job_id}"}
        path = "/stt/create"

        with self._shrunk(request) as upload:
            def once() -> Answer:
                if request.url is not None:
                    resp = self._send("POST", path, json_body={**fields, "url": request.url},
                                      headers=headers, creates=True)
                else:
                    resp = self._upload(path, request, fields, headers, profile.file_field,
                                        upload)
                raise_for_status(resp)
                return resp

            resp = self._call(once)
        # A 2xx we cannot read may still have made a task: never resent blindly.
        body = _json_body(resp, "create", OutcomeUnknown)
        gen_id = body.get("generation_id") or body.get("id") if isinstance(body, dict) else None
        if not gen_id:
            raise PermanentError(f"create answered without a generation_id: "
                                 f"{_excerpt(resp.text)}")
        cost = {h: resp.headers[h] for h in COST_HEADERS if h in resp.headers}
        return Created(str(gen_id), cost or None,
                       timeline=upload.timeline if upload is not None else None)

    @contextlib.contextmanager
    def _shrunk(self, request: Request) -> Iterator[Upload | None]:
        """The smaller file to send for ``request`` (``api.upload: audio|compact``,
        ``api.trim_silence``), made once for every retry of the create; None: the file
        itself. A file PyAV cannot read goes as it is, for the service to judge."""
        if request.path is None or (self._mode == "as_is" and not self._trim) or \
                self._shrink_off:
            yield None
            return
        if pyav_missing():
            self._shrink_off = True
            log.warning("upload_not_shrunk", job_id=request.job_id,
                        reason="PyAV is not installed (pip install 'sttwatch[local]'); "
                               "files are sent as they are")
            yield None
            return
        language = request.options.get("language")
        with prepared(request.path, mode=self._mode, trim=self._trim,
                      min_silence=self._min_silence, job_id=request.job_id,
                      language=str(language) if language else None,
                      opener=request.opener, media=request.media) as upload:
            yield upload

    def _upload(self, path: str, request: Request, fields: dict[str, Any],
                headers: dict[str, str], file_field: str, upload: Upload | None) -> Answer:
        """POST the file as multipart/form-data, read from disk chunk by chunk as it is
        sent (requests' own ``files=`` would hold the whole body in memory)."""
        assert request.path is not None
        source, name = (upload.path, upload.name) if upload else (request.path,
                                                                  request.path.name)
        mime = upload.mime if upload else (mimetypes.guess_type(name)[0]
                                           or "application/octet-stream")
        # The recording itself through the request's opener: on a watched share each block
        # is read on its mount's worker with the deadline, so a share that hangs mid-upload
        # cuts the body short (no task is made) instead of holding this thread.
        opener = request.opener if upload is None and request.opener is not None \
            else plain_open
        with opener(source) as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(0)
            body = Multipart(_form_fields(fields), file_field, name, fh, size, mime)
            body.on_sent = _progress(request.job_id, str(request.path), body.len,
                                     self._on_upload_progress)
            try:
                return self._send("POST", path, data=body, timeouts=(
                    self._timeouts[0], self.upload_read_timeout(size)),
                    creates=True,
                    headers={**headers, "Content-Type": body.content_type})
            except SourceChanged as exc:
                # The body was cut short of its Content-Length: no task can have been made.
                raise TransientError(str(exc)) from None
            except SourceUnreadable as exc:  # cut short too: the caller sees the read error
                raise exc.error from None

    def fetch(self, generation_id: str) -> Status:
        path = f"/stt/{quote(generation_id, safe='')}"

        def once() -> Answer:
            resp = self._send("GET", path)
            raise_for_status(resp)
            return resp

        return parse_status(_json_body(self._call(once), "fetch", TransientError))

    def _call(self, once: Callable[[], Answer]) -> Answer:
        """``once()`` under the retry policy. The first try is made here, plainly: building
        the policy's state machine (as every ``Retrying`` call does) costs more than most
        requests, and most first tries succeed. Only a first try that fails with an error
        worth retrying sets it going, and it starts from that failure (its first attempt
        raises it again), so attempts, waits and logs are as if it had made that try."""
        try:
            return once()
        except Exception as exc:
            if not _is_retryable(exc):
                raise
            first = [exc]

        def again() -> Answer:
            if first:
                raise first.pop()
            return once()

        return self._retrying(again)

    def close(self) -> None:
        with self._pool_lock:
            way, self._transport = self._transport, None
        if way is not None:
            way.close()
