"""Which filesystem a folder lives on, from the kernel's mount table.

A share written by another host (NFS, SMB, FUSE...) sends no inotify event for that host's
changes, so such a folder has to be polled. ``os.stat`` cannot tell a share from a local
disk; ``/proc/self/mountinfo`` names each mount's filesystem type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
                        "afs", "davfs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "virtiofs"})


@dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str

    @property
    def network(self) -> bool:
        """Changes made elsewhere send no events here: any FUSE filesystem (sshfs, rclone,
        s3fs, gvfs...) as well as the network filesystems the kernel speaks itself."""
        return is_network(self.fstype)


def is_network(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype == "fuse" or fstype.startswith("fuse.")


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
