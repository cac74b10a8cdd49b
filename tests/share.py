"""A real network share for tests: a folder served by a private sshd on 127.0.0.1, mounted
with sshfs (FUSE), as another host's share would be.

Files are written on the server's side (``served``), never through the mount, so the mount
sees them the way a NAS client does: no inotify event. Killing the ``sshfs`` process leaves
the mount in place and every call on it fails with ENOTCONN (a dead NFS/SMB server gives
ESTALE or EIO); ``SIGSTOP`` on it makes every call block (a hard NFS mount whose server is
gone) until ``SIGCONT``.

Needs root, ``/dev/fuse`` and the Debian packages ``sshfs`` and ``openssh-server``. Where they
are missing the tests are skipped with the reason, except under ``CI``, where they fail: a CI
run that silently skipped the share tests would prove nothing about shares.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from needs import require


def share_unavailable() -> str | None:
    """None when a share can be set up here, else why not."""
    if os.geteuid() != 0:
        return "the SSHFS share tests need root (to mount with FUSE and run sshd)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine (FUSE mounts are impossible here)"
    for tool in ("sshfs", "ssh-keygen", "fusermount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages sshfs and openssh-server)"
    if not Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd is not installed (Debian package openssh-server)"
    return None


def require_share() -> None:
    require(share_unavailable(), "SSHFS share tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _mounted(point: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == str(point) for line in text.splitlines())


class SshfsShare:
    """sshd serving ``served`` on 127.0.0.1:port, mounted at ``mount`` by sshfs."""

    def __init__(self, base: Path, *, dir_cache: bool = False) -> None:
        self.base = base
        self.served = base / "served"
        self.mount = base / "mnt"
        self.keys = base / "keys"
        self.port = _free_port()
        self.dir_cache = dir_cache
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshfs: subprocess.Popen[bytes] | None = None

    # --- set up ------------------------------------------------------------------------

    def start(self) -> SshfsShare:
        self.served.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("host_key", "user_key"):
            if not (self.keys / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                                str(self.keys / name)], check=True)
        shutil.copy(self.keys / "user_key.pub", self.keys / "authorized_keys")
        conf = self.keys / "sshd_config"
        conf.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}",
            f"HostKey {self.keys / 'host_key'}",
            f"AuthorizedKeysFile {self.keys / 'authorized_keys'}",
            f"PidFile {self.keys / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=(self.keys / "sshd.log").open("ab"))
        _wait(self._listening, 15, f"sshd on 127.0.0.1:{self.port}")
        self.connect()
        return self

    def _listening(self) -> bool:
        assert self.sshd is not None
        if self.sshd.poll() is not None:
            raise AssertionError("sshd exited: " + (self.keys / "sshd.log").read_text())
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def connect(self) -> None:
        """Mount (again, after ``kill``): a new sshfs process on the same mount point."""
        self._unmount()
        opts = ",".join([
            f"IdentityFile={self.keys / 'user_key'}", "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR",
            f"dir_cache={'yes' if self.dir_cache else 'no'}"])
        self.sshfs = subprocess.Popen(
            ["sshfs", "-f", "-p", str(self.port), "-o", opts,
             f"root@127.0.0.1:{self.served}", str(self.mount)],
            stdout=subprocess.DEVNULL, stderr=(self.keys / "sshfs.log").open("ab"))
        _wait(lambda: _mounted(self.mount), 15, f"sshfs mounted at {self.mount}")

    # --- faults ------------------------------------------------------------------------

    def kill(self) -> None:
        """The connection dies; the mount stays and every call on it gives ENOTCONN."""
        assert self.sshfs is not None
        with contextlib.suppress(ProcessLookupError):
            self.sshfs.send_signal(signal.SIGCONT)
            self.sshfs.kill()
        self.sshfs.wait(10)

    def hang(self) -> None:
        """Every call on the mount blocks until ``resume``."""
        assert self.sshfs is not None
        self.sshfs.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.sshfs is not None
        with contextlib.suppress(ProcessLookupError):
            self.sshfs.send_signal(signal.SIGCONT)

    def pids(self) -> list[int]:
        """sshfs and sshd (with its per-connection children): the server side's processes,
        for the bench's CPU figures."""
        out = []
        for proc in (self.sshfs, self.sshd):
            if proc is not None and proc.poll() is None:
                out.append(proc.pid)
        found = subprocess.run(["pgrep", "-P", ",".join(map(str, out))], capture_output=True,
                               text=True).stdout.split() if out else []
        kids = [int(p) for p in found]
        more = subprocess.run(["pgrep", "-P", ",".join(map(str, kids))], capture_output=True,
                              text=True).stdout.split() if kids else []
        return out + kids + [int(p) for p in more]

    # --- tear down ---------------------------------------------------------------------

    def _unmount(self) -> None:
        if self.sshfs is not None:
            self.resume()
        if _mounted(self.mount):
            subprocess.run(["fusermount", "-u", "-z", str(self.mount)], capture_output=True)
            if _mounted(self.mount):
                subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)
        if self.sshfs is not None:
            with contextlib.suppress(ProcessLookupError):
                self.sshfs.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshfs.wait(10)
            self.sshfs = None

    def stop(self) -> None:
        self._unmount()
        if self.sshd is not None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(10)
            self.sshd = None


@contextlib.contextmanager
def sshfs_share(base: Path, *, dir_cache: bool = False) -> Iterator[SshfsShare]:
    share = SshfsShare(base, dir_cache=dir_cache)
    try:
        yield share.start()
    finally:
        share.stop()
