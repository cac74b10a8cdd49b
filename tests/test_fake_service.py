"""Checks of the fake AI/ML API STT server itself (real HTTP over 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_service import FakeConfig, FakeService, make_fake_audio

MODEL = "#g1_whisper-tiny"
DONE = {"completed", "failed", "error"}


def create(svc: FakeService, audio: bytes, key: str = "test-key", **fields: str
           ) -> requests.Response:
    return requests.post(f"{svc.base_url}/stt/create", headers={"Authorization": f"Bearer {key}"},
                         data={"model": MODEL, **fields},
                         files={"audio": ("a.wav", audio, "audio/wav")}, timeout=5)


def fetch(base_url: str, gen_id: str, key: str = "test-key") -> requests.Response:
    return requests.get(f"{base_url}/stt/{gen_id}", headers={"Authorization": f"Bearer {key}"},
                        timeout=5)


def poll(base_url: str, gen_id: str, key: str = "test-key") -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        body: dict[str, Any] = fetch(base_url, gen_id, key).json()
        if body["status"] in DONE:
            return body
        time.sleep(0.02)
    raise AssertionError("task did not finish")


@pytest.mark.parametrize("dialect", [1, 2])
def test_create_and_poll_returns_transcript(tmp_path: Path, dialect: int) -> None:
    audio = make_fake_audio(tmp_path / "a.wav", "Hello world, again.\n").read_bytes()
    with FakeService(FakeConfig(dialect=dialect, task_seconds=0.1)) as svc:
        resp = requests.post(f"{svc.base_url}/stt/create",
                             headers={"Authorization": "Bearer test-key",
                                      "X-Client-Request-Id": "job-1"},
                             data={"model": MODEL, "language": "de"},
                             files={"audio": ("a.wav", audio)}, timeout=5)
        assert resp.status_code == (201 if dialect == 1 else 200)
        assert resp.headers["X-Client-Request-Id"] == "job-1"
        assert resp.headers["x-aimlapi-credits-used"] and resp.headers["x-aimlapi-usd-spent"]
        gen_id = resp.json()["generation_id"]
        assert resp.json().get("status") == (None if dialect == 1 else "queued")
        first = fetch(svc.base_url, gen_id).json()
        assert first["status"] == ("active" if dialect == 1 else "generating")
        body = poll(svc.base_url, gen_id)
        assert body["status"] == "completed"
        result = body["result" if dialect == 1 else "output"]
        if dialect == 2:
            assert body["id"] == body["generation_id"] == gen_id and body["error"] is None
        channel = result["results"]["channels"][0]
        alt = channel["alternatives"][0]
        assert alt["transcript"] == "Hello world, again."
        assert [w["word"] for w in alt["words"]] == ["hello", "world", "again"]
        assert alt["words"][2]["punctuated_word"] == "again." and alt["words"][2]["end"] == 1.2
        assert channel["detected_language"] == "de"
        assert result["metadata"]["duration"] == 1.2 and result["metadata"]["models"] == [MODEL]
        (record,) = svc.creates()
        assert record.fields == {"model": MODEL, "language": "de"} and record.filename == "a.wav"
        assert record.headers["authorization"] == "Bearer test-key"
        assert svc.creates_by_text() == {"Hello world, again.": 1}
        assert len(svc.fetches_for(gen_id)) >= 2


def test_url_create() -> None:
    with FakeService(FakeConfig(task_seconds=0.05)) as svc:
        resp = requests.post(f"{svc.base_url}/stt/create",
                             headers={"Authorization": "Bearer test-key"},
                             json={"model": MODEL, "url": "https://x.test/a.mp3"}, timeout=5)
        assert resp.status_code == 201
        body = poll(svc.base_url, resp.json()["generation_id"])
        transcript = body["result"]["results"]["channels"][0]["alternatives"][0]["transcript"]
        assert transcript == "url https://x.test/a.mp3"


def test_auth_errors() -> None:
    with FakeService() as svc:
        resp = create(svc, b"FAKEAUDIO\nhi", key="wrong")
        assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"
        assert resp.json()["statusCode"] == 401
        svc.update(out_of_credits=True)
        assert create(svc, b"FAKEAUDIO\nhi").status_code == 403
        assert svc.creates_by_text() == {}
        assert svc.creates_by_text(accepted_only=False) == {"hi": 2}


def test_429_with_and_without_retry_after() -> None:
    with FakeService(FakeConfig(fail_next_creates_429=2, retry_after=3)) as svc:
        first = create(svc, b"FAKEAUDIO\nhi")
        assert first.status_code == 429 and first.headers["Retry-After"] == "3"
        svc.update(retry_after=None)
        second = create(svc, b"FAKEAUDIO\nhi")
        assert second.status_code == 429 and "Retry-After" not in second.headers
        assert create(svc, b"FAKEAUDIO\nhi").status_code == 201
        svc.update(fail_next_creates_5xx=1)
        assert create(svc, b"FAKEAUDIO\nhi").status_code == 503
        assert [r.status_code for r in svc.creates()] == [429, 429, 201, 503]


def test_concurrency_limit_queues_fifo_then_rejects() -> None:
    with FakeService(FakeConfig(concurrency=1, task_seconds=0.15)) as svc:
        a = create(svc, b"FAKEAUDIO\none").json()["generation_id"]
        b = create(svc, b"FAKEAUDIO\ntwo").json()["generation_id"]
        assert fetch(svc.base_url, b).json()["status"] == "waiting"
        assert fetch(svc.base_url, a).json()["status"] == "active"
        assert poll(svc.base_url, b)["status"] == "completed"
        done_a, done_b = svc.finished_at(a), svc.finished_at(b)
        assert done_a is not None and done_b is not None
        assert done_b - done_a == pytest.approx(0.15, abs=0.01)
        assert svc.max_running_seen == 1
        svc.update(reject_over_concurrency=True, task_seconds=5)
        assert create(svc, b"FAKEAUDIO\nthree").status_code == 201
        assert create(svc, b"FAKEAUDIO\nfour").status_code == 429


def test_forgotten_id_gives_404() -> None:
    with FakeService(FakeConfig(forget_ids_once=1)) as svc:
        a = create(svc, b"FAKEAUDIO\none").json()["generation_id"]
        b = create(svc, b"FAKEAUDIO\ntwo").json()["generation_id"]
        gone = fetch(svc.base_url, a)
        assert gone.status_code == 404 and gone.json()["message"] == "Generation not found"
        assert fetch(svc.base_url, a).status_code == 404
        assert fetch(svc.base_url, b).status_code == 200
        assert fetch(svc.base_url, "no-such-id").status_code == 404
        svc.forget_all()
        assert fetch(svc.base_url, b).status_code == 404


@pytest.mark.parametrize("dialect", [1, 2])
def test_failed_tasks_report_a_message(dialect: int) -> None:
    cfg = FakeConfig(dialect=dialect, task_seconds=0.05, fail_texts={"boom"})
    with FakeService(cfg) as svc:
        failed = {"failed", "error"}
        boom = poll(svc.base_url, create(svc, b"FAKEAUDIO\nit goes boom").json()["generation_id"])
        assert boom["status"] in failed
        assert boom["error"]["message"] == "Generation failed: boom"
        riff = poll(svc.base_url, create(svc, b"RIFF\x00\x01binary").json()["generation_id"])
        assert riff["status"] in failed
        assert riff["error"]["message"] == "Unsupported audio format"
        empty = create(svc, b"")
        assert empty.status_code == 400 and empty.json()["message"] == "Body validation error!"


def test_fetch_5xx_and_status_override() -> None:
    with FakeService(FakeConfig(fail_next_fetches_5xx=2, status_override="paused")) as svc:
        gen_id = create(svc, b"FAKEAUDIO\nhi").json()["generation_id"]
        assert [fetch(svc.base_url, gen_id).status_code for _ in range(3)] == [502, 500, 200]
        assert fetch(svc.base_url, gen_id).json()["status"] == "paused"


def test_standalone_process() -> None:
    script = Path(__file__).with_name("fake_service.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--task-seconds", "0.05",
                             "--key", "k2", "--dialect", "2", "--concurrency", "none"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, base_url = proc.stdout.readline().split()
        assert ready == "READY" and base_url.endswith("/v1")
        resp = requests.post(f"{base_url}/stt/create", headers={"Authorization": "Bearer k2"},
                             data={"model": MODEL}, files={"audio": b"FAKEAUDIO\nhi"}, timeout=5)
        assert resp.status_code == 200
        assert poll(base_url, resp.json()["generation_id"], key="k2")["status"] == "completed"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
