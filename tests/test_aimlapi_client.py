"""The AI/ML API client against the real fake server (real HTTP over 127.0.0.1, no mocks),
plus pure checks of ``parse_status`` for every dialect in shared/aimlapi-stt.md."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import wait_for
from fake_service import COST_HEADERS, FakeConfig, FakeService, make_fake_audio

from sttwatch.backends import Request, Status, TaskState
from sttwatch.backends.aimlapi import UPLOAD_FLOOR_BPS, AimlApiBackend, parse_status
from sttwatch.errors import (
    AuthError,
    CreditsExhausted,
    ExpiredError,
    PermanentError,
    RateLimited,
    SttwatchError,
    TransientError,
)

KEY = "sk-aiml-7Hq2ZtW9xK4mP0sV"
MODEL = "#g1_whisper-tiny"
PAYLOAD = {"metadata": {"duration": 0.8, "channels": 1},
           "results": {"channels": [{"alternatives": [{"transcript": "hello there"}]}]}}

MakeBackend = Callable[..., AimlApiBackend]


@pytest.fixture
def svc() -> Iterator[FakeService]:
    with FakeService(FakeConfig(key=KEY, task_seconds=0.05)) as service:
        yield service


@pytest.fixture
def make_backend() -> Iterator[MakeBackend]:
    made: list[AimlApiBackend] = []

    def make(base_url: str, *, key: str = KEY, retries: int = 3, read_timeout: float = 5.0,
             sleeps: list[float] | None = None) -> AimlApiBackend:
        record = sleeps if sleeps is not None else []
        backend = AimlApiBackend(base_url, key, MODEL, connect_timeout=2.0,
                                 read_timeout=read_timeout, retries=retries, sleep=record.append)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def audio(tmp_path: Path, text: str = "hello there", name: str = "talk.wav") -> Request:
    return Request(job_id=7, model=MODEL, path=make_fake_audio(tmp_path / name, text))


def wait_finished(backend: AimlApiBackend, gen_id: str) -> Status:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status = backend.fetch(gen_id)
        if status.state is not TaskState.RUNNING:
            return status
        time.sleep(0.02)
    raise AssertionError("the task did not finish")


def raised(exc_type: type[SttwatchError], call: Callable[[], object],
           secret: str = KEY) -> Any:
    """The error ``call`` raises, checked to be free of the API key."""
    with pytest.raises(exc_type) as info:
        call()
    for text in (str(info.value), repr(info.value), *map(str, info.value.args)):
        assert secret not in text
    return info.value


def transcript(result: dict[str, Any] | None) -> str:
    assert result is not None
    return str(result["results"]["channels"][0]["alternatives"][0]["transcript"])


# --- create and fetch --------------------------------------------------------------------------

def test_create_uploads_the_file_with_key_model_options_and_request_id(
        tmp_path: Path, svc: FakeService, make_backend: MakeBackend) -> None:
    backend = make_backend(svc.base_url)
    request = Request(job_id=7, model=MODEL, path=make_fake_audio(tmp_path / "talk.wav", "hi"),
                      options={"language": "en", "punctuate": True, "diarize": False})
    created = backend.create(request)
    (record,) = svc.creates()
    assert created.generation_id == record.generation_id and record.status_code == 201
    assert created.cost == COST_HEADERS
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert record.fields == {"model": MODEL, "language": "en", "punctuate": "true",
                             "diarize": "false"}
    assert (record.filename, record.text) == ("talk.wav", "hi")
    request_id = record.headers["x-client-request-id"]
    assert request_id == "sttwatch-job-7"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", request_id)  # what the service accepts


def test_create_from_a_url_sends_json(svc: FakeService, make_backend: MakeBackend) -> None:
    backend = make_backend(svc.base_url)
    created = backend.create(Request(job_id=3, model="#g1_whisper-base",
                                     url="https://x.test/a.mp3", options={"punctuate": True}))
    (record,) = svc.creates()
    assert record.generation_id == created.generation_id
    assert record.fields == {"model": "#g1_whisper-base", "url": "https://x.test/a.mp3",
                             "punctuate": True}
    assert transcript(wait_finished(backend, created.generation_id).result) == (
        "url https://x.test/a.mp3")


@pytest.mark.parametrize("dialect", [1, 2])
def test_fetch_reads_running_then_done_in_both_dialects(
        tmp_path: Path, make_backend: MakeBackend, dialect: int) -> None:
    with FakeService(FakeConfig(key=KEY, dialect=dialect, task_seconds=0.3)) as svc:
        backend = make_backend(svc.base_url)
        gen_id = backend.create(audio(tmp_path, "Hello there, world.")).generation_id
        running = backend.fetch(gen_id)
        assert running.state is TaskState.RUNNING and running.known_status
        assert running.raw_status == ("active" if dialect == 1 else "generating")
        done = wait_finished(backend, gen_id)
        assert done.state is TaskState.DONE and done.raw_status == "completed"
        assert transcript(done.result) == "Hello there, world."
        assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in svc.fetches())


@pytest.mark.parametrize("dialect", [1, 2])
def test_failed_task_reports_the_service_message(
        tmp_path: Path, make_backend: MakeBackend, dialect: int) -> None:
    cfg = FakeConfig(key=KEY, dialect=dialect, task_seconds=0.05, fail_texts={"boom"})
    with FakeService(cfg) as svc:
        backend = make_backend(svc.base_url)
        status = wait_finished(backend, backend.create(audio(tmp_path, "it goes boom"))
                               .generation_id)
        assert status.state is TaskState.FAILED and status.result is None
        assert status.error == "Generation failed: boom"


def test_unknown_status_keeps_polling(tmp_path: Path, make_backend: MakeBackend) -> None:
    with FakeService(FakeConfig(key=KEY, task_seconds=5, status_override="paused")) as svc:
        backend = make_backend(svc.base_url)
        status = backend.fetch(backend.create(audio(tmp_path)).generation_id)
        assert status.state is TaskState.RUNNING
        assert (status.known_status, status.raw_status) == (False, "paused")


# --- errors ------------------------------------------------------------------------------------

def test_rejected_key_is_an_auth_error(tmp_path: Path, svc: FakeService,
                                       make_backend: MakeBackend) -> None:
    wrong = "sk-aiml-WRONG-0000000000"
    backend = make_backend(svc.base_url, key=wrong)
    exc = raised(AuthError, lambda: backend.create(audio(tmp_path)), secret=wrong)
    assert exc.status == 401 and "Invalid API key" in str(exc)
    exc = raised(AuthError, lambda: backend.fetch("some-id"), secret=wrong)
    assert exc.status == 401
    assert [r.status_code for r in svc.records] == [401, 401]  # never retried


def test_out_of_credits_is_an_auth_error(tmp_path: Path, svc: FakeService,
                                         make_backend: MakeBackend) -> None:
    svc.update(out_of_credits=True)
    exc = raised(AuthError, lambda: make_backend(svc.base_url).create(audio(tmp_path)))
    assert exc.status == 403 and "Insufficient credits" in str(exc)
    assert [r.status_code for r in svc.creates()] == [403]


def test_empty_audio_is_a_permanent_error_with_the_service_message(
        tmp_path: Path, svc: FakeService, make_backend: MakeBackend) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    backend = make_backend(svc.base_url)
    exc = raised(PermanentError, lambda: backend.create(Request(1, MODEL, path=empty)))
    assert "400" in str(exc) and "Body validation error!" in str(exc)
    assert [r.status_code for r in svc.creates()] == [400]  # never retried


def test_unknown_or_expired_id_is_an_expired_error(tmp_path: Path, svc: FakeService,
                                                   make_backend: MakeBackend) -> None:
    backend = make_backend(svc.base_url)
    exc = raised(ExpiredError, lambda: backend.fetch("no-such-id"))
    assert "404" in str(exc) and "Generation not found" in str(exc)
    gen_id = backend.create(audio(tmp_path)).generation_id
    svc.forget_all()  # the service dropped its results (about an hour later)
    raised(ExpiredError, lambda: backend.fetch(gen_id))
    assert [r.status_code for r in svc.fetches()] == [404, 404]


def test_server_errors_are_retried_until_success(tmp_path: Path, svc: FakeService,
                                                 make_backend: MakeBackend) -> None:
    sleeps: list[float] = []
    backend = make_backend(svc.base_url, retries=3, sleeps=sleeps)
    svc.update(fail_next_creates_5xx=2, fail_next_fetches_5xx=2)
    with structlog.testing.capture_logs() as logs:
        gen_id = backend.create(audio(tmp_path)).generation_id
        assert [r.status_code for r in svc.creates()] == [503, 503, 201]
        assert svc.creates_by_text() == {"hello there": 1}
        assert backend.fetch(gen_id).state in (TaskState.RUNNING, TaskState.DONE)
    assert [r.status_code for r in svc.fetches()] == [502, 500, 200]
    assert len(sleeps) == 4 and all(0 <= s <= 30 for s in sleeps)
    retries = [e for e in logs if e["event"] == "request_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 1, 2]  # the first try counts as one
    assert "HTTP 503" in retries[0]["error"] and "HTTP 502" in retries[2]["error"]


def test_server_errors_past_the_retries_are_transient(tmp_path: Path, svc: FakeService,
                                                      make_backend: MakeBackend) -> None:
    svc.update(fail_next_creates_5xx=10)
    sleeps: list[float] = []
    backend = make_backend(svc.base_url, retries=3, sleeps=sleeps)
    exc = raised(TransientError, lambda: backend.create(audio(tmp_path)))
    assert exc.status == 503 and "Service temporarily unavailable" in str(exc)
    assert [r.status_code for r in svc.creates()] == [503, 503, 503] and len(sleeps) == 2
    assert svc.creates_by_text() == {}


@pytest.mark.parametrize(("retry_after", "expected"), [(7, 7.0), (None, None)])
def test_429_is_rate_limited_at_once_and_not_retried(
        tmp_path: Path, svc: FakeService, make_backend: MakeBackend,
        retry_after: float | None, expected: float | None) -> None:
    svc.update(fail_next_creates_429=3, retry_after=retry_after)
    sleeps: list[float] = []
    exc = raised(RateLimited,
                 lambda: make_backend(svc.base_url, sleeps=sleeps).create(audio(tmp_path)))
    assert exc.status == 429 and exc.retry_after == expected
    assert "Too many requests" in str(exc)
    assert len(svc.creates()) == 1 and sleeps == []


def test_an_http_proxy_from_the_environment_gets_whole_urls(
        monkeypatch: pytest.MonkeyPatch, make_backend: MakeBackend) -> None:
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            data = json.dumps({"status": "completed", "result": PAYLOAD}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        backend = make_backend("http://stt.example.invalid/v1")
        assert backend.fetch("g 1").state is TaskState.DONE
        assert backend.fetch("g2").state is TaskState.DONE
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["http://stt.example.invalid/v1/stt/g%201",
                    "http://stt.example.invalid/v1/stt/g2"]


def test_a_closed_backend_opens_its_pool_again(tmp_path: Path, svc: FakeService,
                                               make_backend: MakeBackend) -> None:
    backend = make_backend(svc.base_url)
    first = backend.create(audio(tmp_path)).generation_id
    backend.close()
    assert backend.fetch(first).state in (TaskState.RUNNING, TaskState.DONE)
    assert [r.status_code for r in svc.fetches()] == [200]


def test_closed_port_is_transient(tmp_path: Path, make_backend: MakeBackend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    backend = make_backend(f"http://127.0.0.1:{port}/v1", retries=2, sleeps=sleeps)
    exc = raised(TransientError, lambda: backend.create(audio(tmp_path)))
    assert "connection failed" in str(exc)
    raised(TransientError, lambda: backend.fetch("some-id"))
    assert len(sleeps) == 2  # one retry per call


def test_a_create_that_timed_out_is_not_sent_again(tmp_path: Path,
                                                   make_backend: MakeBackend) -> None:
    held = threading.Event()  # the service holds every create until released
    with FakeService(FakeConfig(key=KEY, hold_creates=held)) as svc:
        backend = make_backend(svc.base_url, retries=3, read_timeout=0.1)
        exc = raised(TransientError, lambda: backend.create(audio(tmp_path)))
        assert "timed out" in str(exc)
        assert svc.arrived() == 1
        held.set()
        wait_for(svc.all_answered, timeout=10)
        assert [r.text for r in svc.creates()] == ["hello there"]  # sent once, not retried


# --- Retry-After variants the fake cannot send: a tiny scripted server --------------------------

@pytest.fixture
def scripted() -> Iterator[Callable[[list[tuple[int, dict[str, str], Any]]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answers: list[tuple[int, dict[str, str], Any]]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = answers.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_retry_after_on_a_server_error_is_capped(
        scripted: Callable[..., str], make_backend: MakeBackend) -> None:
    base = scripted([(503, {"Retry-After": "3600"}, {"message": "maintenance"}),
                     (200, {}, {"status": "completed", "result": PAYLOAD})])
    sleeps: list[float] = []
    status = make_backend(base, sleeps=sleeps).fetch("gen-1")
    assert status.state is TaskState.DONE
    assert sleeps == [30.0]  # the hint of the first answer, within the cap


def test_a_malformed_retry_after_still_gives_rate_limited(
        tmp_path: Path, scripted: Callable[..., str], make_backend: MakeBackend) -> None:
    base = scripted([(429, {"Retry-After": "soon"}, {"message": "Too many requests"})])
    exc = raised(RateLimited, lambda: make_backend(base).create(audio(tmp_path)))
    assert exc.retry_after is None


def test_retry_after_as_an_http_date(tmp_path: Path, scripted: Callable[..., str],
                                     make_backend: MakeBackend) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    base = scripted([(429, {"Retry-After": when}, {"message": "Too many requests"})])
    exc = raised(RateLimited, lambda: make_backend(base).create(audio(tmp_path)))
    assert exc.retry_after == pytest.approx(120, abs=5)


def test_problem_json_error_message_is_shown(tmp_path: Path, scripted: Callable[..., str],
                                             make_backend: MakeBackend) -> None:
    body = {"title": "Unprocessable", "status": 422, "message": "outer",
            "error": {"name": "BadAudio", "message": "audio could not be decoded"}}
    base = scripted([(422, {"Content-Type": "application/problem+json"}, body)])
    exc = raised(PermanentError, lambda: make_backend(base).create(audio(tmp_path)))
    assert str(exc) == "HTTP 422: audio could not be decoded"


# --- the key never comes back out of an answer (issue 12) --------------------------------------

ECHO_CASES = {  # what the gateway-like fake is told, what it answers, the error we expect
    "401": ({"key": "another-key"}, AuthError, "Invalid API key"),
    "403-credits": ({"out_of_credits": True}, CreditsExhausted, "Insufficient credits"),
    "403-other": ({"forbidden_message": "Access denied"}, AuthError, "Access denied"),
    "400": ({"create_status_for_texts": {"hello": 400}}, PermanentError, "Forced answer 400"),
    "422": ({"create_status_for_texts": {"hello": 422}}, PermanentError, "Forced answer 422"),
    "429": ({"fail_next_creates_429": 5}, RateLimited, "Too many requests"),
    "500": ({"create_status_for_texts": {"hello": 500}}, TransientError, "HTTP 500"),
    "503": ({"fail_next_creates_5xx": 5}, TransientError, "HTTP 503"),
}


@pytest.mark.parametrize("case", sorted(ECHO_CASES))
def test_create_errors_that_quote_the_request_headers_never_carry_the_key(
        tmp_path: Path, svc: FakeService, make_backend: MakeBackend, case: str) -> None:
    changes, exc_type, shown = ECHO_CASES[case]
    svc.update(echo_headers=True, **changes)
    exc = raised(exc_type, lambda: make_backend(svc.base_url).create(audio(tmp_path)))
    assert shown in str(exc)  # the service's own words still reach the user
    assert exc_type is not AuthError or not isinstance(exc, CreditsExhausted)
    assert all(f"Bearer {KEY}" in r.headers.get("authorization", "") for r in svc.creates())


def test_fetch_errors_and_failed_tasks_that_quote_the_headers_never_carry_the_key(
        tmp_path: Path, svc: FakeService, make_backend: MakeBackend) -> None:
    svc.update(echo_headers=True, fail_texts={"boom"})
    backend = make_backend(svc.base_url, retries=2)
    failed = wait_finished(backend, backend.create(audio(tmp_path, "it goes boom")).generation_id)
    assert failed.state is TaskState.FAILED and KEY not in (failed.error or "")
    assert "Generation failed: boom" in (failed.error or "") and "***" in (failed.error or "")
    raised(ExpiredError, lambda: backend.fetch("no-such-id"))
    svc.update(fail_next_fetches_5xx=5)
    exc = raised(TransientError, lambda: backend.fetch("no-such-id"))
    assert "HTTP 50" in str(exc) and "***" in str(exc)  # the gateway's HTML page, redacted
    svc.update(key="another-key")
    raised(AuthError, lambda: backend.fetch("no-such-id"))


def test_any_bearer_token_and_the_key_in_any_part_of_an_answer_are_redacted(
        tmp_path: Path, scripted: Callable[..., str], make_backend: MakeBackend) -> None:
    other = "Bearer eyJhbGciOi.J9x_y-z~+/w=="
    base = scripted([
        (400, {}, {"message": f"bad header Authorization: {other}", "errors": [KEY]}),
        (200, {}, {"status": f"weird {KEY}", "result": None}),
        (200, {}, {"status": "failed", "error": {"message": f"upstream said {KEY}"}}),
        (200, {"x-aimlapi-usd-spent": KEY, "x-aimlapi-credits-used": "12", "X-Quote": other},
         {"generation_id": f"g-{KEY}"}),
    ])
    backend = make_backend(base)
    exc = raised(PermanentError, lambda: backend.create(audio(tmp_path)), secret="eyJhbGciOi")
    assert "Bearer ***" in str(exc) and KEY not in str(exc)
    odd = backend.fetch("g")
    assert odd.raw_status == "weird ***" and not odd.known_status
    assert backend.fetch("g").error == "upstream said ***"
    created = backend.create(audio(tmp_path))
    assert KEY not in created.generation_id
    assert created.cost == {"x-aimlapi-usd-spent": "***", "x-aimlapi-credits-used": "12"}


# --- out of credits is not a bad key (issue 15) -------------------------------------------------

@pytest.mark.parametrize(("status", "body", "credits"), [
    (403, {"message": "Insufficient credits"}, True),
    (403, {"title": "Forbidden", "status": 403,
           "error": {"name": "BillingError", "message": "Your balance is too low"}}, True),
    (403, {"message": "Monthly quota exceeded"}, True),
    (403, {"message": "Payment required to continue"}, True),
    (403, {"message": "Insufficient permissions for this model"}, False),
    (403, {"message": "Access denied"}, False),
    (401, {"message": "Invalid API key"}, False),
    (401, {"message": "Insufficient credits"}, False),  # 401 is always the key
])
def test_a_403_that_speaks_of_credits_is_credits_exhausted(
        tmp_path: Path, scripted: Callable[..., str], make_backend: MakeBackend,
        status: int, body: dict[str, Any], credits: bool) -> None:
    base = scripted([(status, {}, body)])
    exc = raised(AuthError, lambda: make_backend(base).create(audio(tmp_path)))
    assert isinstance(exc, CreditsExhausted) is credits and exc.status == status


def test_a_fetch_403_with_credits_is_credits_exhausted_too(
        scripted: Callable[..., str], make_backend: MakeBackend) -> None:
    base = scripted([(403, {}, {"message": "insufficient balance"})])
    raised(CreditsExhausted, lambda: make_backend(base).fetch("g"))


# --- streamed uploads (issue 13) ----------------------------------------------------------------

def test_a_large_upload_is_streamed_whole_with_progress(
        tmp_path: Path, svc: FakeService) -> None:
    big = tmp_path / "long.wav"
    with big.open("wb") as fh:
        fh.write(b"RIFF")
        fh.truncate(70 << 20)  # sparse: over the fake's streaming threshold and the log's
    seen: list[tuple[int, int, int]] = []
    backend = AimlApiBackend(svc.base_url, KEY, MODEL, on_upload_progress=lambda *a: seen.append(a))
    try:
        with structlog.testing.capture_logs() as logs:
            backend.create(Request(job_id=9, model=MODEL, path=big, options={"punctuate": True}))
    finally:
        backend.close()
    (record,) = svc.creates()
    assert record.body_bytes > 70 << 20 and record.status_code == 201
    assert record.fields == {"model": MODEL, "punctuate": "true"}
    assert record.filename == "long.wav"
    assert seen and seen[-1][0] == 9 and seen[-1][1] == seen[-1][2] == record.body_bytes
    progress = [e for e in logs if e["event"] == "upload_progress"]
    assert [e["percent"] for e in progress] == list(range(10, 101, 10))
    assert progress[-1]["bytes"] == progress[-1]["total"] == record.body_bytes
    assert {e["job_id"] for e in progress} == {9} and progress[0]["path"] == str(big)


def test_a_file_that_shrinks_during_its_upload_fails_cleanly(
        tmp_path: Path, svc: FakeService) -> None:
    big = tmp_path / "shrinking.wav"
    with big.open("wb") as fh:
        fh.truncate(20 << 20)

    def shrink(job_id: int, sent: int, total: int) -> None:
        if sent > 1 << 20:
            os.truncate(big, 1 << 20)

    backend = AimlApiBackend(svc.base_url, KEY, MODEL, retries=1, on_upload_progress=shrink)
    try:
        exc = raised(TransientError, lambda: backend.create(Request(1, MODEL, path=big)))
    finally:
        backend.close()
    assert "got shorter while it was being uploaded" in str(exc)
    assert not [r for r in svc.creates() if r.status_code < 300]


def test_a_file_that_grows_during_its_upload_is_sent_as_it_was(
        tmp_path: Path, svc: FakeService) -> None:
    path = make_fake_audio(tmp_path / "growing.wav", "first words")
    size = path.stat().st_size

    def grow(job_id: int, sent: int, total: int) -> None:
        with path.open("ab") as fh:
            fh.write(b" and more")

    backend = AimlApiBackend(svc.base_url, KEY, MODEL, on_upload_progress=grow)
    try:
        backend.create(Request(1, MODEL, path=path))
    finally:
        backend.close()
    (record,) = svc.creates()
    assert record.status_code == 201 and record.text == "first words"
    assert path.stat().st_size > size


def test_the_read_timeout_and_deadline_grow_with_the_upload(make_backend: MakeBackend) -> None:
    backend = make_backend("http://127.0.0.1:9/v1", read_timeout=5.0)
    assert backend.upload_read_timeout(0) == 5.0
    assert backend.upload_read_timeout(600 * UPLOAD_FLOOR_BPS) == 605.0
    assert backend.create_deadline(600 * UPLOAD_FLOOR_BPS) == 2.0 + 605.0


# --- parse_status: every documented variant ----------------------------------------------------

@pytest.mark.parametrize("name", ["waiting", "active", "queued", "generating", "processing"])
@pytest.mark.parametrize("envelope", ["result", "output"])
def test_parse_status_still_working(name: str, envelope: str) -> None:
    status = parse_status({"id": "g", "generation_id": "g", "status": name, envelope: None,
                           "error": None})
    assert (status.state, status.known_status, status.raw_status) == (
        TaskState.RUNNING, True, name)


@pytest.mark.parametrize("body", [
    {"status": "completed", "result": PAYLOAD},
    {"status": "completed", "output": PAYLOAD, "id": "g", "error": None},
    {"status": "Completed", "result": PAYLOAD},
    {"result": PAYLOAD},  # a result and no status
    {"output": PAYLOAD},
    PAYLOAD,  # the legacy single call: the payload itself, no envelope
], ids=["result", "output", "case", "no-status-result", "no-status-output", "legacy"])
def test_parse_status_finished(body: dict[str, Any]) -> None:
    status = parse_status(body)
    assert status.state is TaskState.DONE and status.result == PAYLOAD
    assert transcript(status.result) == "hello there"


@pytest.mark.parametrize("name", ["error", "failed", "cancelled", "timeout"])
def test_parse_status_failed_reads_error_message(name: str) -> None:
    status = parse_status({"status": name, "output": None,
                           "error": {"name": "GenerationError", "message": "bad audio"}})
    assert (status.state, status.error, status.raw_status) == (TaskState.FAILED, "bad audio",
                                                               name)


def test_parse_status_failed_without_a_message_names_the_status() -> None:
    status = parse_status({"status": "failed", "result": None})
    assert status.state is TaskState.FAILED and "failed" in (status.error or "")
    assert parse_status({"status": "error", "error": "plain text"}).error == "plain text"


def test_parse_status_unknown_or_missing_status_keeps_running() -> None:
    paused = parse_status({"status": "paused", "result": None})
    assert (paused.state, paused.known_status, paused.raw_status) == (
        TaskState.RUNNING, False, "paused")
    bare = parse_status({"id": "g"})
    assert bare.state is TaskState.RUNNING and not bare.known_status


def test_parse_status_rejects_what_it_cannot_read() -> None:
    with pytest.raises(PermanentError, match="without a result"):
        parse_status({"status": "completed", "result": None})
    with pytest.raises(TransientError, match="unexpected answer"):
        parse_status(["not", "an", "object"])
