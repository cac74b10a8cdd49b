"""Shared fixtures: the fake service, config files in tmp_path, the CLI in-process, and a
real daemon process that tests can SIGTERM or SIGKILL."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from fake_service import FakeConfig, FakeService
from needs import require

from sttwatch.cli import main

KEY = "sk-test-0123456789abcdefSECRET"

# A daemon writes its heartbeat (what ``status`` reads) every 5 s, or at half systemd's
# watchdog interval when that is shorter: a test that waits for ``status`` to show what the
# daemon waits on starts it with this, and waits half a second for a beat instead of five.
FAST_BEAT = {"WATCHDOG_USEC": "1000000"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the fault tests at full size (tests/test_crash.py: 250 "
                     "files, 12 kills per seed) for the figures in docs/reliability.md")


@pytest.fixture(autouse=True)
def _alone_when_solo(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With pytest-xdist's workers (scripts/test.sh runs two), a test marked ``solo`` runs
    while no other test does: it bounds wall time, CPU or watchdog gaps, holds leases of a
    few seconds, or hangs a FUSE mount, and a test on the other worker would disturb it.
    Every test holds a shared lock on one file of the run, a solo test an exclusive one;
    the turnstile in front lets a waiting solo test in before the next shared one. Set up
    before the test's other fixtures and torn down after them, so it covers theirs too."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process: every test runs alone already
        return
    run_dir = tmp_path_factory.getbasetemp().parent  # shared by this run's workers
    mode = fcntl.LOCK_EX if request.node.get_closest_marker("solo") else fcntl.LOCK_SH
    with (run_dir / "solo.lock").open("a") as lock, (run_dir / "solo.turn").open("a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, mode)
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def fake() -> Iterator[FakeService]:
    with FakeService(FakeConfig(key=KEY, task_seconds=0.3)) as svc:
        yield svc


def write_config(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1",
                 **sections: Any) -> Path:
    """A config in tmp_path watching tmp_path/inbox; ``sections`` are merged on top."""
    cfg: dict[str, Any] = {
        "backend": "aimlapi",
        "api": {"base_url": base_url, "api_key_env": "STTWATCH_TEST_KEY", "retries": 3,
                "connect_timeout": 2, "read_timeout": 10},
        "watch": [{"path": "./inbox"}],
        "state": {"path": "./state/sttwatch.db"},
        "daemon": {"settle_seconds": 0.5, "rescan_seconds": 30, "first_poll_seconds": 0.2,
                   "poll_cap_seconds": 2},
        "log": {"format": "json", "level": "debug"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **value}
        else:
            cfg[name] = value
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "sttwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Call the real CLI in-process with captured streams (httpie's ``http()`` idea)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err,
                environ={"STTWATCH_TEST_KEY": KEY} if env is None else env)
    return Result(code, out.getvalue(), err.getvalue())


class Daemon:
    """``sttwatch run`` as a real child process, logging JSON lines to a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None,
                 extra: tuple[str, ...] = (), wrap: tuple[str, ...] = ()) -> None:
        self.config = config
        self.log = config.parent / "daemon.log"
        self.env = {**os.environ, "STTWATCH_TEST_KEY": KEY, **(env or {})}
        self.extra = extra
        self.wrap = wrap  # a command the daemon runs under (bind_mounted: another host's view)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "sttwatch", "run", "--config",
                 str(self.config), *self.extra], stdout=fh, stderr=fh, env=self.env)
        return self

    def wait_started(self, timeout: float = 30) -> None:
        wait_for(lambda: '"event": "starting"' in self.log.read_text(), timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(config: Path, **kw: Any) -> Daemon:
        d = Daemon(config, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def wait_for(cond: Callable[[], bool], timeout: float = 30, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def transcript(path: Path, fmt: str = "txt") -> str | None:
    out = path.with_suffix(f".{fmt}")
    return out.read_text().strip() if out.exists() else None


@contextlib.contextmanager
def tmpfs_at(at: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``at`` (made if missing), unmounted afterwards:
    a filesystem that fills up or goes away for real. Needs root; skips otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(at)], check=True)
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=False)


def bind_mounted(source: Path, at: Path) -> tuple[str, ...]:
    """A prefix that runs a command in a mount namespace of its own where ``source`` is
    bind-mounted at ``at``: the way another host sees one share (other mtimes, another mount
    path), on one machine. The command execs in place, so signals reach the daemon. Needs
    root; skips otherwise, and fails under CI, where it must run."""
    require(None if os.geteuid() == 0 and shutil.which("unshare") is not None
            else "bind mounts in a mount namespace need root and unshare", "bind-mount tests")
    at.mkdir(parents=True, exist_ok=True)
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(source), str(at))


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Any]:
    """A real SSHFS share (tests/share.py): write in ``share.served``, watch ``share.mount``."""
    from share import require_share, sshfs_share
    require_share()
    with sshfs_share(tmp_path / "share") as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A command run in-process (``main([...])``) configures structlog for the whole
    process, e.g. at level warning for ``transcribe``: put the defaults back after each test,
    so a later test that captures info events sees them whatever ran before it."""
    yield
    structlog.reset_defaults()
    import logging
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__module__ == "sttwatch.log"]:
        root.removeHandler(handler)
