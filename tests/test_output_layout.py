"""What users find on disk: every format, names, mirror folders, on_done, per-folder settings
and error sidecars, all through the real daemon and the fake service."""

from __future__ import annotations

import json
from pathlib import Path

import srt
import webvtt
from conftest import run_cli, write_config
from fake_service import FakeService, make_fake_audio

TEXT = "one two three four five six seven eight nine ten eleven twelve"


def test_every_format_is_written_and_parses(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url, output={"formats": ["txt", "json", "srt", "vtt"]})
    src = make_fake_audio(tmp_path / "inbox" / "talk.mp3", TEXT)
    assert run_cli("run", "--config", str(cfg), "--once").code == 0

    assert (tmp_path / "inbox" / "talk.txt").read_text().strip() == TEXT
    doc = json.loads((tmp_path / "inbox" / "talk.json").read_text())
    head = doc["sttwatch"]
    (create,) = fake.creates()
    assert head["source"] == str(src) and head["backend"] == "aimlapi"
    assert head["generation_id"] == create.generation_id and len(head["sha256"]) == 64
    assert head["cost"]["x-aimlapi-usd-spent"] == "0.00105"
    duration = doc["result"]["metadata"]["duration"]
    assert doc["result"]["results"]["channels"][0]["alternatives"][0]["transcript"] == TEXT

    cues = list(srt.parse((tmp_path / "inbox" / "talk.srt").read_text()))
    vtt = webvtt.read(str(tmp_path / "inbox" / "talk.vtt"))
    for starts, ends, texts in (
            ([c.start.total_seconds() for c in cues], [c.end.total_seconds() for c in cues],
             [c.content for c in cues]),
            ([c.start_in_seconds for c in vtt], [c.end_in_seconds for c in vtt],
             [c.text for c in vtt])):
        assert starts == sorted(starts) and all(e > s for s, e in zip(starts, ends, strict=True))
        assert ends[-1] <= duration + 0.01
        assert " ".join(" ".join(t.split()) for t in texts) == TEXT


def test_same_stem_sources_do_not_overwrite_each_other(tmp_path: Path,
                                                       fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "talk.mp3", "the mp3 one")
    make_fake_audio(tmp_path / "inbox" / "talk.wav", "the wav one")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0
    texts = {p.name: p.read_text().strip() for p in (tmp_path / "inbox").glob("*.txt")}
    assert sorted(texts.values()) == ["the mp3 one", "the wav one"]
    assert "talk.txt" in texts and len(texts) == 2
    other = next(n for n in texts if n != "talk.txt")
    assert other in ("talk.mp3.txt", "talk.wav.txt")
    assert any(e["event"] == "output_name_taken" for e in r.events())


def test_name_template_and_mirror_folder(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url,
                       output={"name": "{name}.{format}", "dir": "./transcripts"})
    make_fake_audio(tmp_path / "inbox" / "a" / "b" / "talk.mp3", "mirrored")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    out = tmp_path / "transcripts" / "a" / "b" / "talk.mp3.txt"
    assert out.read_text().strip() == "mirrored"
    assert not list((tmp_path / "inbox").rglob("*.txt"))


def test_on_done_move_and_delete(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url,
                       output={"on_done": "move", "done_dir": "./inbox/done"})
    make_fake_audio(tmp_path / "inbox" / "sub" / "m.mp3", "moved away")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert (tmp_path / "inbox" / "sub" / "m.txt").read_text().strip() == "moved away"
    assert not (tmp_path / "inbox" / "sub" / "m.mp3").exists()
    assert (tmp_path / "inbox" / "done" / "sub" / "m.mp3").exists()
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert len(fake.creates()) == 1  # the done folder is never input

    cfg = write_config(tmp_path, fake.base_url, output={"on_done": "delete"})
    make_fake_audio(tmp_path / "inbox" / "d.mp3", "deleted after")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert not (tmp_path / "inbox" / "d.mp3").exists()
    assert (tmp_path / "inbox" / "d.txt").read_text().strip() == "deleted after"


def test_per_watch_overrides_reach_the_service(tmp_path: Path, fake: FakeService) -> None:
    (tmp_path / "fr").mkdir()
    cfg = write_config(tmp_path, fake.base_url, api={"options": {"punctuate": True}},
                       watch=[{"path": "./inbox"},
                              {"path": "./fr", "model": "#g1_whisper-small",
                               "options": {"language": "fr"}, "formats": ["txt", "vtt"]}])
    make_fake_audio(tmp_path / "inbox" / "lecture.mp3", "english lecture")
    make_fake_audio(tmp_path / "fr" / "entretien.mp3", "un entretien")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    fields = {c.text: c.fields for c in fake.creates()}
    assert fields["english lecture"]["model"] == "#g1_whisper-tiny"
    assert fields["english lecture"]["punctuate"] == "true"
    assert "language" not in fields["english lecture"]
    assert fields["un entretien"]["model"] == "#g1_whisper-small"
    assert fields["un entretien"]["language"] == "fr"
    assert (tmp_path / "fr" / "entretien.vtt").exists()
    assert not (tmp_path / "inbox" / "lecture.vtt").exists()


def test_error_sidecar_written_on_failure_and_removed_on_success(tmp_path: Path,
                                                                 fake: FakeService) -> None:
    fake.update(fail_texts={"flaky"})
    cfg = write_config(tmp_path, fake.base_url)
    src = make_fake_audio(tmp_path / "inbox" / "x.mp3", "flaky recording")
    assert run_cli("run", "--config", str(cfg), "--once").code == 1
    sidecar = tmp_path / "inbox" / "x.mp3.sttwatch-error.json"
    doc = json.loads(sidecar.read_text())
    assert "Generation failed: flaky" in doc["reason"] and doc["attempts"] == 1 and doc["when"]

    fake.update(fail_texts=set())
    assert run_cli("retry", "--config", str(cfg), "--failed").code == 0
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert src.with_suffix(".txt").read_text().strip() == "flaky recording"
    assert not sidecar.exists()


def test_error_files_can_be_turned_off(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url, output={"error_files": False})
    (tmp_path / "inbox" / "empty.mp3").write_bytes(b"")
    assert run_cli("run", "--config", str(cfg), "--once").code == 1
    assert not list((tmp_path / "inbox").glob("*.sttwatch-error.json"))
