"""The API key reaches no artefact (issue 12): a real daemon against a service that quotes
the request headers (Authorization included) in every error answer and failed task, under
each error path, then every file it left and every ``status`` output is searched for the key.

Paths driven: 400 and 422 on create (failed jobs, sidecars), 503 on create past the retries
(a requeued job's stored error), 5xx on fetch, a task that fails with the headers in its
message (sidecar), 401 on create (auth pause, ``status``), 403 out of credits (the same, in
a second daemon), and a transcript written in between.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_BEAT, KEY, Daemon, run_cli, wait_for, write_config
from fake_service import FakeConfig, FakeService, make_fake_audio

from sttwatch.store.packing import unpack_result

# The whole key, and each half of it: an excerpt cut in the middle of the key still leaks.
NEEDLES = (KEY, KEY[: len(KEY) // 2], KEY[len(KEY) // 2:])


@pytest.fixture
def gateway() -> Iterator[FakeService]:
    cfg = FakeConfig(key=KEY, task_seconds=0.3, echo_headers=True, fail_texts={"boom"},
                     create_status_for_texts={"reject-400": 400, "reject-422": 422})
    with FakeService(cfg) as svc:
        yield svc


def leaks(name: str, data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [f"{name} holds {needle!r}" for needle in NEEDLES if needle.encode() in raw]


def test_the_key_reaches_no_artefact_under_any_error_path(
        tmp_path: Path, gateway: FakeService, daemon_factory: type[Daemon]) -> None:
    config = write_config(tmp_path, gateway.base_url, api={"retries": 2})
    inbox = tmp_path / "inbox"
    outputs: dict[str, str | bytes] = {}

    def snapshot(label: str) -> str:
        # The state file and its -wal/-shm as the running daemon has them (the WAL is folded
        # into the main file when the daemon stops).
        for part in (tmp_path / "state").glob("*"):
            outputs[f"{part.name} while running ({label})"] = part.read_bytes()
        text = run_cli("status", "--config", str(config))
        as_json = run_cli("status", "--json", "--config", str(config))
        json.loads(as_json.out)  # still valid JSON after redaction
        outputs[f"status ({label})"] = text.out + text.err
        outputs[f"status --json ({label})"] = as_json.out + as_json.err
        return text.out + as_json.out

    # 1: answers per file, with the first creates and fetches answered by a failing gateway.
    gateway.update(fail_next_creates_5xx=2, fail_next_fetches_5xx=2)
    for name, text in [("bad400", "reject-400 please"), ("bad422", "reject-422 please"),
                       ("boom", "it goes boom"), ("good", "all fine here")]:
        make_fake_audio(inbox / f"{name}.wav", text)
    daemon = daemon_factory(config, env=FAST_BEAT).start()
    wait_for(lambda: len(list(inbox.glob("*.sttwatch-error.json"))) == 3
             and (inbox / "good.txt").exists(), timeout=60)
    assert [r.status_code for r in gateway.creates()].count(503) == 2
    assert any(r.status_code >= 500 for r in gateway.fetches())
    snapshot("failures")

    # 2: the key is refused (401) while the daemon runs.
    gateway.update(key="rotated-key")
    make_fake_audio(inbox / "later.wav", "after the rotation")
    wait_for(lambda: "Invalid API key" in snapshot("401"), timeout=60)
    assert daemon.stop() == 0

    # 3: out of credits (403), seen by a new daemon picking up the queued file.
    gateway.update(key=KEY, out_of_credits=True)
    daemon = daemon_factory(config, env=FAST_BEAT).start()
    wait_for(lambda: "Insufficient credits" in snapshot("403"), timeout=60)
    assert daemon.stop() == 0
    assert {r.status_code for r in gateway.creates()} >= {400, 422, 503, 201, 401, 403}

    found = [hit for label, text in outputs.items() for hit in leaks(label, text)]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    assert any(label.startswith("sttwatch.db-wal") for label in outputs)
    found += [hit for p in files for hit in leaks(str(p.relative_to(tmp_path)), p.read_bytes())]
    # Results are kept compressed, where a byte search cannot see: read them back too.
    with sqlite3.connect(tmp_path / "state" / "sttwatch.db") as db:
        for path, packed in db.execute("SELECT path, result FROM jobs WHERE result IS NOT NULL"):
            found += leaks(f"stored result of {path}", json.dumps(unpack_result(packed)))
    assert not found, "\n".join(found)
    # The service's own words still reach the user, with the key masked.
    sidecar = (inbox / "bad400.wav.sttwatch-error.json").read_text()
    assert "Forced answer 400" in sidecar and "Bearer ***" in sidecar
