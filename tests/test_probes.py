"""A job's container is opened once: the screen probes it, the upload's preparation and the
finisher's json header take that probe (media.Probes). Three openings per file were most of
the daemon's CPU per small file; a file that changed is another version and is probed
afresh."""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli, transcript, write_config
from fake_service import FakeService, make_fake_audio

from sttwatch.backends import media
from sttwatch.backends.media import MediaInfo, Probes, Track
from sttwatch.offline import ShareUnreachable

FILM = MediaInfo("matroska,webm", (Track(0, "video", "h264", None, True),
                                   Track(1, "audio", "aac", "eng", True)))


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every container probe made, by path, whoever asks (the cache's and any other)."""
    seen: Counter[str] = Counter()
    real = media.probe

    def counting(path: Path, opener: media.Opener | None = None) -> MediaInfo | None:
        seen[str(path)] += 1
        return real(path, opener)

    monkeypatch.setattr(media, "probe", counting)
    for module in ("sttwatch.backends.shrink", "sttwatch.backends.local"):
        monkeypatch.setattr(f"{module}.probe", counting)
    return seen


def fake_probe(monkeypatch: pytest.MonkeyPatch, answers: list[object]) -> list[Path]:
    asked: list[Path] = []

    def answer(path: Path, _opener: object = None) -> MediaInfo | None:
        asked.append(path)
        got = answers.pop(0)
        if isinstance(got, BaseException):
            raise got
        assert got is None or isinstance(got, MediaInfo)
        return got

    monkeypatch.setattr(media, "probe", answer)
    return asked


def test_a_version_is_probed_once_and_a_changed_file_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_probe(monkeypatch, [FILM, None, FILM])
    probes = Probes()
    a = Path("/films/a.mkv")
    assert probes.of(a, 100, 1)() is FILM
    assert probes.of(a, 100, 1)() is FILM  # the upload, then the finisher: no new opening
    assert probes.probed == 1
    assert probes.of(a, 100, 2)() is None  # touched: another version, never the old probe
    assert probes.of(a, 101, 2)() is FILM  # grown
    assert probes.probed == 3 and asked == [a, a, a]
    probes.forget(a, 101, 2)
    assert probes.held == 2


def test_unreadable_is_kept_but_a_share_away_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    away = ShareUnreachable(errno.EHOSTDOWN, "its folder is offline", "/share/b.mp3")
    fake_probe(monkeypatch, [None, away, FILM])
    probes = Probes()
    b = probes.of(Path("/share/b.mp3"), 5, 5)
    assert b() is None and b() is None  # PyAV cannot read it: that is this version's answer
    c = probes.of(Path("/share/c.mp3"), 5, 5)
    with pytest.raises(ShareUnreachable):
        c()
    assert c() is FILM  # the share answered again: probed then, not an old failure
    assert probes.probed == 2


def test_the_least_recently_used_version_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_probe(monkeypatch, [FILM] * 5)
    probes = Probes(size=2)
    first, second, third = (probes.of(Path(f"/r/{n}.wav"), 1, 1) for n in "abc")
    first()
    second()
    first()  # used again: the second is now the oldest
    third()
    assert probes.held == 2 and probes.probed == 3
    first()
    assert probes.probed == 3
    second()
    assert probes.probed == 4


def test_each_file_is_probed_once_through_the_daemon(tmp_path: Path, fake: FakeService,
                                                     probed: Counter[str]) -> None:
    """The screen (skip_no_speech, on by default), the upload's preparation (upload: audio,
    the default) and the finisher's json header each used to open the file: three probes."""
    cfg = write_config(tmp_path, fake.base_url, watch=[{"path": "./inbox",
                                                        "formats": ["txt", "json"]}],
                       log={"format": "json", "level": "info"})
    past = time.time() - 60
    names = [tmp_path / "inbox" / f"rec{i}.mp3" for i in range(5)]
    for i, path in enumerate(names):
        make_fake_audio(path, f"recording {i}")
        os.utime(path, (past, past))
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0, r.err[-3000:]
    assert [transcript(p) for p in names] == [f"recording {i}" for i in range(5)]
    assert len(fake.creates()) == 5
    assert probed == {str(p): 1 for p in names}
