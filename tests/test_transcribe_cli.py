"""``sttwatch transcribe`` against the fake service: files, URLs, formats, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import srt
from conftest import run_cli, write_config
from fake_service import FakeService, make_fake_audio


def test_files_and_urls_print_their_transcripts(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    a = make_fake_audio(tmp_path / "a.mp3", "hello from a file")
    url = "https://example.org/talk.mp3"
    r = run_cli("transcribe", "--config", str(cfg), str(a), url)
    assert r.code == 0, r.err
    assert r.out == f"== {a}\nhello from a file\n== {url}\nurl {url}\n"
    url_create = next(c for c in fake.creates() if c.filename is None)
    assert url_create.fields["url"] == url and url_create.fields["model"] == "#g1_whisper-tiny"


def test_srt_output_parses(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    a = make_fake_audio(tmp_path / "a.mp3", "one two three four five six seven eight")
    r = run_cli("transcribe", "--config", str(cfg), "--format", "srt", str(a))
    assert r.code == 0, r.err
    cues = list(srt.parse(r.out))
    assert " ".join(c.content.replace("\n", " ") for c in cues) == (
        "one two three four five six seven eight")


def test_exit_codes_missing_file_failed_task_and_refused_key(tmp_path: Path,
                                                             fake: FakeService) -> None:
    fake.update(fail_texts={"boom"})
    cfg = write_config(tmp_path, fake.base_url)
    good = make_fake_audio(tmp_path / "good.mp3", "fine")
    bad = make_fake_audio(tmp_path / "bad.mp3", "boom")
    r = run_cli("transcribe", "--config", str(cfg), str(tmp_path / "nope.mp3"), str(bad),
                str(good))
    assert r.code == 1
    assert "nope.mp3: no such file" in r.err and "Generation failed: boom" in r.err
    assert r.out.endswith("fine\n")

    r = run_cli("transcribe", "--config", str(cfg), str(good),
                env={"STTWATCH_TEST_KEY": "sk-wrong-0000000000000"})
    assert r.code == 3 and "refused the API key" in r.err and "sk-wrong" not in r.err


def test_transcribe_spends_from_the_budget_and_books_into_the_ledger(
        tmp_path: Path, fake: FakeService) -> None:
    from fake_service import COST_HEADERS
    per_create = float(COST_HEADERS["x-aimlapi-usd-spent"])
    a = make_fake_audio(tmp_path / "a.mp3", "paid for once")
    cfg = write_config(tmp_path, fake.base_url, budget={"usd_per_day": per_create / 2})
    r = run_cli("transcribe", "--config", str(cfg), str(a))
    assert r.code == 0, r.err
    status = json.loads(run_cli("status", "--config", str(cfg), "--json").out)
    assert status["budget"]["spent"]["creates_today"] == 1
    assert status["budget"]["spent"]["usd_today"] == pytest.approx(per_create)
    # The day's cap is reached: the next one is not sent, and the command says why.
    r = run_cli("transcribe", "--config", str(cfg), str(a))
    assert r.code == 1 and "not sent: budget usd_per_day" in r.err
    assert len(fake.creates()) == 1
