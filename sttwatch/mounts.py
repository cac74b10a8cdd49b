"""Which filesystem a folder lives on, from the kernel's mount table.

A share written by another host (NFS, SMB, FUSE...) sends no inotify event for that host's
changes, so such a folder has to be polled. ``os.stat`` cannot tell a share from a local
disk; ``/proc/self/mountinfo`` names each mount's filesystem type.

Calls on a share go through its mount's worker with a deadline (fsgate.py); calls on a
filesystem known to be local need not, and are made on the calling thread. ``MountTable``
answers "is this path local?" per call without reading the table each time: the kernel
marks an open ``/proc/self/mountinfo`` with a priority event after every mount and unmount,
so one ``poll`` says whether the cached table is still the truth.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
                        "afs", "davfs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "virtiofs"})
# Filesystems on this host's own disks (or in its memory): a call on them cannot hang on a
# server that went away. Anything else (a network filesystem, any FUSE daemon, a type not
# listed) is treated as a share that may hang.
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "f2fs", "zfs",
                      "jfs", "reiserfs", "nilfs2", "tmpfs", "ramfs", "devtmpfs", "overlay", "vfat",
                      "msdos", "exfat", "ntfs3", "hfsplus", "udf", "iso9660", "squashfs",
                      "erofs"})


@dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str

    @property
    def network(self) -> bool:
        """Changes made elsewhere send no events here: any FUSE filesystem (sshfs, rclone,
        s3fs, gvfs...) as well as the network filesystems the kernel speaks itself."""
        return is_network(self.fstype)

    @property
    def local(self) -> bool:
        return is_local(self.fstype)


def is_network(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype == "fuse" or fstype.startswith("fuse.")


def is_local(fstype: str) -> bool:
    """Known to be a local disk's (or memory's) filesystem: never a share that can hang.
    FUSE (``fuseblk`` too: ntfs-3g is a daemon that can stop) and unknown types are not."""
    return fstype in LOCAL_FS


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mount point and filesystem type of each line; the fstype follows the `` - ``
    separator (the optional fields before it vary in number)."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5 or not tail.split():
            continue
        mounts.append(Mount(Path(_unescape(fields[4])), tail.split()[0]))
    return mounts


def mount_of(path: Path, mountinfo: str | None = None) -> Mount | None:
    """The deepest mount holding ``path`` (by path, without touching the folder itself, so a
    dead or hung share cannot block the answer). None when the table cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    best: Mount | None = None
    for m in parse_mountinfo(mountinfo):  # later lines are mounted over earlier ones
        if path.is_relative_to(m.point) and (
                best is None or len(m.point.parts) >= len(best.point.parts)):
            best = m
    return best


class MountTable:
    """The mount table, read again only after it changed (one ``poll`` per question).

    Where ``/proc/self/mountinfo`` cannot be opened nothing is known: ``lookup`` says None
    and ``local`` False, so every call keeps its mount's worker. Safe to use from any
    thread."""

    def __init__(self, path: Path = MOUNTINFO) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._generation = 0
        # The table of one generation, by mount point, and the folders judged on it.
        self._snap: tuple[int, dict[str, Mount], dict[str, bool]] | None = None
        self._poll: select.poll | None = None
        try:
            # Opened before the first read: a change after it is seen.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        weakref.finalize(self, os.close, fd)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLPRI)

    def generation(self) -> int:
        """A number that changes after each mount or unmount in this process's namespace;
        -1 when the table cannot be watched."""
        if self._poll is None:
            return -1  # read_again is no use either: no table to trust
        with self._lock:  # one poll at a time (a poll object refuses concurrent use)
            if any(ev & (select.POLLPRI | select.POLLERR) for _fd, ev in self._poll.poll(0)):
                self._generation += 1
            return self._generation

    def read_again(self) -> None:
        """The next question reads the table again, changed or not: for a remount seen
        another way (a watch folder that is not the one it was), should no poll have said."""
        with self._lock:
            self._generation += 1

    def _current(self) -> tuple[dict[str, Mount], dict[str, bool]] | None:
        gen = self.generation()
        if gen < 0:
            return None
        snap = self._snap
        if snap is not None and snap[0] == gen:
            return snap[1], snap[2]
        try:
            text = self._path.read_text()
        except OSError:
            return None
        points = {str(m.point): m for m in parse_mountinfo(text)}  # later lines win
        judged: dict[str, bool] = {}
        with self._lock:
            if self._generation == gen:
                self._snap = (gen, points, judged)
        return points, judged

    def lookup(self, path: Path) -> Mount | None:
        """The mount holding ``path`` (by path, as ``mount_of``); None when unknown."""
        now = self._current()
        if now is None:
            return None
        here = os.path.normpath(path)
        while True:
            m = now[0].get(here)
            if m is not None:
                return m
            up = os.path.dirname(here)
            if up == here:
                return None
            here = up

    def local(self, path: Path) -> bool:
        """Is ``path`` on a local filesystem, and every mount on the way to it too? A path
        below a share reaches its local mount through the share's folders, which can hang."""
        now = self._current()
        if now is None:
            return False
        points, judged = now
        here = os.path.normpath(path)
        m = points.get(here)
        up = os.path.dirname(here)
        if m is not None and not m.local:
            return False
        if up == here:
            return m is not None
        if len(judged) > 10_000:  # a huge tree of output folders: judged again as met
            judged.clear()
        return _folder_local(points, judged, up)


def _folder_local(points: dict[str, Mount], judged: dict[str, bool], folder: str) -> bool:
    known = judged.get(folder)
    if known is None:
        m = points.get(folder)
        up = os.path.dirname(folder)
        if m is not None and not m.local:
            known = False
        elif up == folder:
            known = m is not None  # "/" itself: local only when it is mounted so
        else:
            known = _folder_local(points, judged, up)
        judged[folder] = known
    return known
