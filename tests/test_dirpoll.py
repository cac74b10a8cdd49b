"""The share poller on real folders: folder mtimes say where to look, files are stat-ed only
when new (or at the paced full rescan)."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from sttwatch.dirpoll import DirPoller


class Seen:
    """What the poller reported, in order (appended from its thread)."""

    def __init__(self) -> None:
        self.all: list[tuple[str, str]] = []
        self.taken = 0

    def put(self, item: tuple[str, str]) -> None:
        self.all.append(item)

    def drain(self) -> list[tuple[str, str]]:
        out = self.all[self.taken:]
        self.taken += len(out)
        return out


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[tuple[DirPoller, Seen, Path]]:
    root = tmp_path / "share"
    root.mkdir()
    seen = Seen()
    p = DirPoller(str(root), True, lambda n: n.endswith(".mp3"), frozenset({str(root / "out")}),
                  found=lambda path, _s, _m: seen.put(("found", path)),
                  link=lambda path: seen.put(("link", path)),
                  deleted=lambda path: seen.put(("deleted", path)),
                  trouble=lambda exc: seen.put(("trouble", str(exc))),
                  interval=0.05, rescan_seconds=3600)
    (root / "old.mp3").write_bytes(b"1")
    p.start()
    yield p, seen, root
    p.stop()


def _after_rounds(p: DirPoller, n: int = 2) -> None:
    start = p.rounds
    wait_for(lambda: p.rounds >= start + n, 10)


def test_first_round_finds_everything_then_only_changes(
        polled: tuple[DirPoller, Seen, Path]) -> None:
    p, seen, root = polled
    _after_rounds(p)
    assert seen.drain() == [("found", str(root / "old.mp3"))]
    _after_rounds(p, 5)
    assert seen.drain() == []  # nothing changed: nothing reported
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "deep" / "a.mp3").write_bytes(b"a")
    (root / "b.mp3").write_bytes(b"b")
    (root / "notes.txt").write_bytes(b"n")
    (root / "out").mkdir()
    (root / "out" / "c.mp3").write_bytes(b"c")  # a folder not to enter
    want = {str(root / "sub" / "deep" / "a.mp3"), str(root / "b.mp3")}
    wait_for(lambda: want <= {path for kind, path in seen.all[seen.taken:] if kind == "found"},
             10)
    _after_rounds(p, 3)
    assert {path for kind, path in seen.drain() if kind == "found"} == want
    os.unlink(root / "b.mp3")
    wait_for(lambda: ("deleted", str(root / "b.mp3")) in seen.all, 10)


def test_a_rewrite_in_place_waits_for_the_full_rescan(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    f = root / "a.mp3"
    f.write_bytes(b"1")
    found: queue.Queue[int] = queue.Queue()
    p = DirPoller(str(root), True, lambda n: n.endswith(".mp3"), frozenset(),
                  found=lambda _p, size, _m: found.put(size), link=lambda _p: None,
                  deleted=lambda _p: None, trouble=lambda _e: None, interval=0.05,
                  rescan_seconds=1.0, rescan_rate=1e6)
    p.start()
    try:
        assert found.get(timeout=10) == 1
        old = time.time() - 100  # the folder's mtime stays as it was
        os.utime(root, (old, old))
        _after_rounds(p)
        f.write_bytes(b"22")
        os.utime(root, (old, old))
        assert found.get(timeout=10) == 2  # found by the rescan, a second later
    finally:
        p.stop()
