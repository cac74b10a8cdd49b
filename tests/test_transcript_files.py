"""Transcript files on real filesystems: their permissions, names too long for the filesystem,
and which write errors are worth waiting for."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, tmpfs_at, write_config
from fake_service import FakeService, make_fake_audio

from sttwatch.config import OutputConfig
from sttwatch.errors import RenderError
from sttwatch.outputs import write_atomic
from sttwatch.transcripts import (
    ERROR_SUFFIX,
    LEFTOVER,
    Placement,
    error_file,
    write_error,
    write_error_is_permanent,
    write_transcripts,
)

TEXT = "one two three four five six seven eight nine ten"
RESULT = {"results": {"channels": [{"alternatives": [{"transcript": TEXT}]}]}}
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def umask() -> Iterator[None]:
    """The test sets the umask it needs and the process gets its own back."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_at(tmp_path / "mnt", "4m") as mnt:
        yield mnt


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def place(source: Path, formats: tuple[str, ...] = ("txt", "srt")) -> Placement:
    out = OutputConfig(formats=formats, name="{stem}.{format}", dir=None, on_done="keep",
                       done_dir=None, error_files=True)
    return Placement(source, source.parent, formats, out)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("source_mode", "umask_bits", "expected"), [
    (0o600, 0o022, 0o600),   # a private recording stays private
    (0o644, 0o027, 0o640),   # the unit's UMask=0027 holds
    (0o664, 0o002, 0o664),   # a shared group folder stays shared
    (0o755, 0o022, 0o644),   # execute bits are never copied onto text
])
def test_transcripts_and_sidecar_take_the_source_mode(tmp_path: Path, source_mode: int,
                                                      umask_bits: int, expected: int) -> None:
    src = tmp_path / "talk.wav"
    src.write_bytes(b"RIFF")
    src.chmod(source_mode)
    os.umask(umask_bits)
    p = place(src)
    write_transcripts(p.paths(), p.formats, RESULT, {"source": str(src)})
    write_error(src, "the service said no", 3, 0.0)
    written = [*p.paths(), error_file(src)]
    assert [mode(f) for f in written] == [expected] * 3
    assert (tmp_path / "talk.txt").read_text().strip() == TEXT


@pytest.mark.usefixtures("umask")
def test_replacing_a_transcript_never_widens_it(tmp_path: Path) -> None:
    target = tmp_path / "talk.txt"
    write_atomic(target, "first\n", 0o644)
    write_atomic(target, "second\n", 0o600)
    assert mode(target) == 0o600 and target.read_text() == "second\n"


@pytest.mark.usefixtures("umask")
def test_private_recording_gets_private_transcript_through_the_daemon(
        tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url, output={"formats": ["txt", "json"]})
    src = make_fake_audio(tmp_path / "inbox" / "secret.mp3", TEXT)
    src.chmod(0o600)
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    for name in ("secret.txt", "secret.json"):
        assert mode(tmp_path / "inbox" / name) == 0o600
    assert (tmp_path / "inbox" / "secret.txt").read_text().strip() == TEXT


def test_long_source_name_is_written_with_a_fitting_temp_name(tmpfs: Path) -> None:
    """A 250-byte name: the transcript fits NAME_MAX (255) but ``.name.XXXXXXXX.tmp`` would not;
    the error sidecar's name would not fit either and is shortened predictably."""
    src = tmpfs / ("\u00e4" * 60 + "x" * 126 + ".wav")  # 120 + 126 + 4 = 250 bytes
    assert len(os.fsencode(src.name)) == 250
    src.write_bytes(b"RIFF")
    p = place(src, ("txt", "json"))
    write_transcripts(p.paths(), p.formats, RESULT, {"source": str(src)})
    assert [f.name for f in p.paths()] == [src.stem + ".txt", src.stem + ".json"]
    assert p.paths()[0].read_text().strip() == TEXT

    fallback = place(src).paths(p.keys()[1])  # "name.wav.txt": 254 bytes, still fits
    assert fallback[0].name == src.name + ".txt"

    write_error(src, "too long for the service", 1, 0.0)
    sidecar = error_file(src)
    assert sidecar.exists() and sidecar.name.endswith(ERROR_SUFFIX)
    assert len(os.fsencode(sidecar.name)) <= 255
    assert sidecar == error_file(src)  # the same name every time: clear_error finds it
    assert sidecar.name.startswith("\u00e4" * 60)  # cut on a character boundary
    assert sorted(os.listdir(tmpfs)) == sorted([src.name, p.paths()[0].name,
                                                p.paths()[1].name, sidecar.name])


def test_transcript_name_too_long_is_shortened_keeping_the_extension(tmpfs: Path) -> None:
    src = tmpfs / ("r" * 251 + ".wav")  # 255 bytes: "name.wav.txt" is 259
    src.write_bytes(b"RIFF")
    p = place(src)
    paths = p.paths(p.keys()[1])
    assert [f.suffix for f in paths] == [".txt", ".srt"]
    assert all(len(os.fsencode(f.name)) <= 255 for f in paths)
    assert paths[0].stem.split("~")[0] == paths[1].stem.split("~")[0]
    write_transcripts(paths, p.formats, RESULT, {"source": str(src)})
    assert paths[0].read_text().strip() == TEXT
    assert place(src).paths(p.keys()[1]) == paths  # predictable: same input, same names
    assert not [n for n in os.listdir(tmpfs) if LEFTOVER.match(n)]


def test_long_name_goes_through_the_daemon(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    src = make_fake_audio(tmp_path / "inbox" / ("n" * 246 + ".mp3"), TEXT)
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert src.with_suffix(".txt").read_text().strip() == TEXT


def oserror(action: object) -> OSError:
    assert callable(action)
    with pytest.raises(OSError) as info:
        action()
    return info.value


def test_write_errors_that_waiting_cannot_cure(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()
    (tmp_path / "file").write_text("x")
    permanent = {
        errno.ENAMETOOLONG: lambda: write_atomic(tmp_path / ("x" * 300 + ".txt"), "t"),
        errno.EISDIR: lambda: write_atomic(tmp_path / "dir.txt", "t"),
    }
    for code, action in permanent.items():
        exc = oserror(action)
        assert exc.errno == code and write_error_is_permanent(exc), code
    gone = oserror(lambda: write_atomic(tmp_path / "missing" / "a.txt", "t"))
    assert not write_error_is_permanent(gone)  # a share that comes back cures it
    # A file where the output folder should be: the user moves it away, and the billed
    # result is written then (tests/test_edge_cases.py drives that through the daemon).
    blocked = oserror(lambda: write_atomic(tmp_path / "file" / "a.txt", "t"))
    assert blocked.errno == errno.ENOTDIR and not write_error_is_permanent(blocked)


@ROOT_ONLY
def test_full_or_read_only_filesystem_stays_retryable(tmpfs: Path) -> None:
    (tmpfs / "ballast").write_bytes(b"\0" * (4 << 20))  # size=4m: nothing left
    full = oserror(lambda: write_atomic(tmpfs / "a.txt", "t" * 65536))
    assert full.errno == errno.ENOSPC and not write_error_is_permanent(full)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    ro = oserror(lambda: write_atomic(tmpfs / "b.txt", "t"))
    assert ro.errno == errno.EROFS and not write_error_is_permanent(ro)


def test_an_unreadable_result_writes_no_transcript_but_its_json_alone_is_kept(
        tmp_path: Path) -> None:
    """What the finisher does with a result no profile reads: the formats asked for raise
    before any file is written; then the json alone keeps the result and the reason, for
    ``retry --render`` (it used to raise as well, and the finish never ended)."""
    src = tmp_path / "talk.wav"
    src.write_bytes(b"RIFF")
    p = place(src, ("txt", "json"))
    bad, hdr = {"odd": 1}, {"source": str(src), "model": "#g1_whisper-tiny"}
    with pytest.raises(RenderError):
        write_transcripts(p.paths(), p.formats, bad, hdr)
    assert not any(path.exists() for path in p.paths())
    json_path = p.paths()[1]
    write_transcripts([json_path], ["json"], bad, hdr)
    kept = json.loads(json_path.read_text())
    assert kept["result"] == bad and kept["transcript"] is None
    assert "no transcript" in kept["render_error"]
