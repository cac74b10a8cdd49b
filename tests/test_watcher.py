"""The watcher on real folders, renames and mounts: symlinks, pickup at once after a move,
our own writes kept out, a replaced inbox, a share unmounted and mounted again, a folder
that is not there yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import wait_for

from sttwatch.config import AUDIO_PATTERNS, WatchConfig
from sttwatch.transcripts import write_error, write_transcripts
from sttwatch.watcher import Settled, Watcher

RESULT = {"results": {"channels": [{"alternatives": [{"transcript": "hello there"}]}]}}


def watch(path: Path, **kw: Any) -> WatchConfig:
    base: dict[str, Any] = dict(path=path, recursive=True, patterns=AUDIO_PATTERNS, ignore=(),
                                settle_seconds=None, polling=False, model=None, options=None,
                                formats=None, backend=None)
    return WatchConfig(**{**base, **kw})


class Running:
    """A watcher driven like the daemon's main loop: ``tick`` and ``healthy`` in turn."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.settled: list[Settled] = []

    def pump(self) -> None:
        self.settled += self.watcher.tick()
        self.watcher.healthy()

    def names(self) -> set[str]:
        return {s.path.name for s in self.settled}

    def until(self, cond: Callable[[], bool], timeout: float = 10) -> None:
        def step() -> bool:
            self.pump()
            return cond()
        wait_for(step, timeout, step=0.05)


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    made: list[Watcher] = []

    def make(*watches: WatchConfig, settle: float = 0.3, start: bool = True) -> Running:
        w = Watcher(watches, settle, time.time)
        made.append(w)
        if start:
            w.start()
        return Running(w)

    yield make
    for w in made:
        w.stop()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def mount_tmpfs(at: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(at)], check=True)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def write(path: Path, data: bytes = b"ID3 recording") -> Path:
    path.write_bytes(data)
    return path


# --- symlinks ---------------------------------------------------------------------------

def test_symlink_out_of_the_inbox_is_not_taken(tmp_path: Path, running: Any,
                                               logs: list[dict[str, Any]]) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    private = write(outside / "private.wav")
    private.chmod(0o600)
    (inbox / "link.wav").symlink_to("../outside/private.wav")
    write(inbox / "real.wav")
    r = running(watch(inbox), settle=0.0)
    r.until(lambda: "real.wav" in r.names())
    for _ in range(5):
        r.pump()
    r.watcher.scan()  # a rescan does not take it either, nor says so again
    r.until(lambda: r.watcher.waiting() == 0)
    assert r.names() == {"real.wav"}
    skipped = events(logs, "symlink_skipped")
    assert len(skipped) == 1 and skipped[0]["path"] == str(inbox / "link.wav")


def test_followed_symlink_must_stay_inside_the_watched_folders(tmp_path: Path,
                                                                running: Any) -> None:
    inbox, archive, outside = tmp_path / "inbox", tmp_path / "archive", tmp_path / "outside"
    for d in (inbox, archive, outside):
        d.mkdir()
    write(archive / "kept.mp3")
    write(outside / "private.wav")
    (inbox / "inside.mp3").symlink_to(archive / "kept.mp3")
    (inbox / "escape.wav").symlink_to(outside / "private.wav")
    r = running(watch(inbox, follow_symlinks=True), watch(archive), settle=0.0)
    r.until(lambda: {"inside.mp3", "kept.mp3"} <= r.names())
    r.until(lambda: r.watcher.waiting() == 0)
    assert r.names() == {"inside.mp3", "kept.mp3"}
    (inbox / "late.wav").symlink_to(outside / "private.wav")  # by event, not by scan
    write(inbox / "marker.wav")
    r.until(lambda: "marker.wav" in r.names())
    assert "late.wav" not in r.names()


# --- pickup -----------------------------------------------------------------------------

def test_move_from_an_unwatched_folder_is_taken_at_once(tmp_path: Path,
                                                        running: Any) -> None:
    """The settle time is 60 s: only a move event (full events) takes the file sooner."""
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    r = running(watch(inbox), settle=60.0)
    src = write(elsewhere / "talk.m4a")
    os.rename(src, inbox / "talk.m4a")
    r.until(lambda: "talk.m4a" in r.names(), timeout=10)
    # A file written in place still waits for its settle time (it may grow again).
    write(inbox / "growing.wav")
    for _ in range(10):
        r.pump()
    assert "growing.wav" not in r.names()


def test_a_temp_name_renamed_into_place_is_taken_at_once(tmp_path: Path,
                                                         running: Any) -> None:
    """rsync and many uploaders write a hidden temp file, then rename it: the rename's hidden
    half is dropped before watchdog sees it, and its other half still takes the file without
    waiting for the settle time (60 s here)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    r = running(watch(inbox), settle=60.0)
    for temp, name in ((".talk.m4a.Xy12ab", "talk.m4a"), ("memo.wav.part", "memo.wav")):
        os.rename(write(inbox / temp), inbox / name)
    r.until(lambda: {"talk.m4a", "memo.wav"} <= r.names(), timeout=10)
    assert r.names() == {"talk.m4a", "memo.wav"}


def test_our_own_writes_never_reach_the_judgement(tmp_path: Path, running: Any) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = write(inbox / "talk.wav")
    r = running(watch(inbox), settle=0.0)
    r.until(lambda: "talk.wav" in r.names())
    hints = r.watcher.hints
    while not hints.empty():
        hints.get_nowait()
    paths = [inbox / f"talk.{k}" for k in ("txt", "json", "srt", "vtt")]
    write_transcripts(paths, ["txt", "json", "srt", "vtt"], RESULT, {"source": str(src)})
    write_error(src, "a reason", 1, 0.0)
    marker = write(inbox / "marker.wav")
    seen: list[tuple[str, str]] = []
    wait_for(lambda: seen.append(hints.get(timeout=5)) or (seen[-1][1] == str(marker)
             and seen[-1][0] == "closed"), timeout=10)
    assert all(p == str(marker) for _, p in seen), seen


# --- observers checked ------------------------------------------------------------------

def test_inbox_removed_and_made_again_is_watched_again(tmp_path: Path, running: Any,
                                                       logs: list[dict[str, Any]]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    r = running(watch(inbox), settle=0.2)
    write(inbox / "first.wav")
    r.until(lambda: "first.wav" in r.names())
    subprocess.run(["rm", "-rf", str(inbox)], check=True)
    inbox.mkdir()
    write(inbox / "second.wav")  # no rescan timer runs here: the re-armed watch finds it
    r.until(lambda: "second.wav" in r.names(), timeout=8)
    assert r.watcher.watch_states() == {str(inbox): True}
    assert len(events(logs, "watch_online")) == 2  # at start, and once re-armed
    write(inbox / "third.wav")  # and its events arrive again
    r.until(lambda: "third.wav" in r.names(), timeout=8)


# --- mounts -----------------------------------------------------------------------------

@root_only
def test_unmounted_share_is_offline_and_comes_back(tmp_path: Path, running: Any,
                                                   logs: list[dict[str, Any]]) -> None:
    share, nas = tmp_path / "share", tmp_path / "nas"  # the mount point / a folder below it
    share.mkdir()
    nas.mkdir()
    mount_tmpfs(share)
    mount_tmpfs(nas)
    (nas / "inbox").mkdir()
    try:
        write(share / "before.wav")
        r = running(watch(share), watch(nas / "inbox"), settle=0.2)
        r.until(lambda: "before.wav" in r.names())
        assert r.watcher.is_online(share / "x.wav") and r.watcher.is_online(nas / "inbox" / "y")
        write(share / "queued.wav")
        subprocess.run(["umount", "-l", str(share)], check=True)
        subprocess.run(["umount", "-l", str(nas)], check=True)
        assert not r.watcher.is_online(share / "queued.wav")  # at once, before any check
        r.until(lambda: r.watcher.watch_states() == {str(share): False,
                                                     str(nas / "inbox"): False})
        # The bare mount point: a file there is not the share's and is not taken.
        write(share / "stray.wav")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            r.pump()
        assert "stray.wav" not in r.names() and "queued.wav" not in r.names()
        assert sorted(os.listdir(share)) == ["stray.wav"] and os.listdir(nas) == []
        assert len(events(logs, "watch_offline")) == 2  # once per watch, not every second
        (share / "stray.wav").unlink()

        mount_tmpfs(share)
        mount_tmpfs(nas)
        (nas / "inbox").mkdir()
        write(share / "after.wav")
        write(nas / "inbox" / "nas.wav")
        r.until(lambda: {"after.wav", "nas.wav"} <= r.names(), timeout=10)
        assert r.watcher.is_online(share / "after.wav")
        assert len(events(logs, "watch_online")) == 4  # start (2) and back (2)
        write(share / "later.wav")  # the re-armed observer sees new files
        r.until(lambda: "later.wav" in r.names(), timeout=8)
    finally:
        for m in (share, nas):
            subprocess.run(["umount", "-l", str(m)], check=False)


def test_missing_folder_is_waited_for_not_created(tmp_path: Path, running: Any,
                                                  logs: list[dict[str, Any]]) -> None:
    later, made = tmp_path / "later" / "inbox", tmp_path / "made" / "inbox"
    r = running(watch(later), watch(made, create=True), settle=0.2)
    assert not later.parent.exists() and made.is_dir()
    assert r.watcher.watch_states() == {str(later): False, str(made): True}
    assert not r.watcher.is_online(later / "a.wav")
    later.mkdir(parents=True)
    write(later / "a.wav")
    r.until(lambda: "a.wav" in r.names())
    assert r.watcher.watch_states()[str(later)] is True
    assert [e["path"] for e in events(logs, "watch_offline")] == [str(later)]


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path, running: Any) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        running(watch(tmp_path / "afile" / "sub"))


# --- the inotify watch limit --------------------------------------------------------------

LIMITED = '''
import json, sys, time
from pathlib import Path
import structlog
from sttwatch.config import AUDIO_PATTERNS, WatchConfig
from sttwatch.watcher import Watcher

Path("/proc/sys/user/max_inotify_watches").write_text("20")  # this user namespace only
inbox = Path(sys.argv[1])
cfg = WatchConfig(inbox, True, AUDIO_PATTERNS, (), None, False, None, None, None, None)
with structlog.testing.capture_logs() as logs:
    w = Watcher([cfg], 0.2, time.time)
    w.start()
    for i in range(0, 40, 4):  # spread over the tree, most in folders past the limit
        (inbox / f"d{i:02d}" / f"late{i:02d}.wav").write_bytes(b"ID3")
    found, deadline = set(), time.monotonic() + 15
    while len(found) < 10 and time.monotonic() < deadline:
        found |= {s.path.name for s in w.tick()}
        w.healthy()
        time.sleep(0.05)
    w.stop()
print(json.dumps({"found": sorted(found),
                  "limit": [e for e in logs if e["event"] == "inotify_watch_limit"]}))
'''


@pytest.mark.skipif(not Path("/proc/sys/user/max_inotify_watches").exists()
                    or subprocess.run(["unshare", "--user", "--map-root-user", "true"],
                                      check=False).returncode != 0,
                    reason="needs user namespaces to lower the inotify watch limit privately")
def test_watch_limit_is_reported_once_and_the_folders_still_watched(tmp_path: Path) -> None:
    """40 folders against a limit of 20 watches: watchdog swallows the ENOSPC of every
    folder but the root; the watcher notices, says how to fix it once, and polls."""
    inbox = tmp_path / "inbox"
    for i in range(40):
        (inbox / f"d{i:02d}").mkdir(parents=True)
    out = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", LIMITED,
                          str(inbox)], capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).parent)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["found"] == [f"late{i:02d}.wav" for i in range(0, 40, 4)]
    (limit,) = result["limit"]
    assert limit["setting"] == "fs.inotify.max_user_watches" and "sysctl" in limit["fix"]


# --- scans against the store -------------------------------------------------------------

def test_a_scan_hands_on_only_what_the_store_does_not_know_as_it_is(tmp_path: Path) -> None:
    """A rescan of a large library compares each folder's listing with the store in one
    read: known files at their size and mtime stop there; new and changed ones go on."""
    from sttwatch.store import Admission, Plan
    from sttwatch.store.sqlite import SqliteStore

    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    old = time.time() - 3600
    files = [write(inbox / f"r{i:02}.wav") for i in range(40)] + [write(inbox / "sub" / "s.wav")]
    for f in files:
        os.utime(f, (old, old))
    store = SqliteStore(tmp_path / "state.db")
    plan = Plan("aimlapi", "#g1_whisper-tiny", {}, ("txt",), str(inbox))
    store.admit([Admission(str(f), f.stat().st_size, f.stat().st_mtime_ns, plan, (),
                           "transcript already up to date") for f in files], time.time())
    write(files[3], b"ID3 a longer recording now")  # changed since
    os.utime(files[3], (old, old))
    for new in (inbox / "new.wav", inbox / "sub" / "new.wav"):
        os.utime(write(new), (old, old))
    w = Watcher((watch(inbox),), 0.3, time.time,
                unknown=store.unknown)
    try:
        assert w.scan() == 43  # found, known or not
        taken = {s.path.relative_to(inbox).as_posix() for s in w.tick()}
        assert taken == {"r03.wav", "new.wav", "sub/new.wav"}
        plain = Watcher((watch(inbox),), 0.3, time.time)  # no store: every file goes on
        plain.scan()
        assert len(plain.tick()) == 43
    finally:
        store.close()


def test_a_scan_takes_the_names_the_patterns_say(tmp_path: Path) -> None:
    """Patterns that only name an ending and full globs, in any case; ignored names, hidden
    names, download temp names and our own outputs never, whatever the patterns say."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    old = time.time() - 3600
    names = ["talk.MP3", "talk.mp3.part", "rec-07.wav", "rec-7.wav", "x.ogg", "skip-me.mp3",
             ".hidden.mp3", "notes.txt", "talk.srt", "clip.mp3x", "a.weird"]
    for name in names:
        os.utime(write(inbox / name), (old, old))
    cfg = watch(inbox, patterns=("*.mp3", "rec-??.wav", "*.[ow]gg", "*", "*.txt"),
                ignore=("skip-*",))
    w = Watcher((cfg,), 0.3, time.time)
    w.scan()
    assert {s.path.name for s in w.tick()} == {"talk.MP3", "rec-07.wav", "rec-7.wav",
                                               "x.ogg", "clip.mp3x", "a.weird"}
    picky = Watcher((watch(inbox, patterns=("*.mp3", "rec-??.wav", "*.[ow]gg")),), 0.3,
                    time.time)
    picky.scan()
    assert {s.path.name for s in picky.tick()} == {"talk.MP3", "rec-07.wav", "x.ogg",
                                                   "skip-me.mp3"}
