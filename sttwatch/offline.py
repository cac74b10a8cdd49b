"""Errors that mean "the share is away", not "this file is bad".

A dead NFS server gives ESTALE, SMB gives EIO, a FUSE filesystem whose daemon died gives
ENOTCONN; the mount stays and every call on it fails the same way. Such an error on any call
about a file under a watch (the stat, the hash, the upload's read, the transcript write, the
source's ``on_done`` move) makes the job wait for its folder: never failed, never forgotten,
its result kept.
"""

from __future__ import annotations

import errno

UNREACHABLE = frozenset({errno.ENOTCONN, errno.ESTALE, errno.EIO, errno.EHOSTDOWN,
                         errno.ETIMEDOUT, errno.ENODEV})
OFFLINE_RETRY = 5.0  # seconds before a job whose share was away is looked at again


class ShareUnreachable(OSError):
    """A call on a share failed the way a dead server fails."""


def unreachable(exc: BaseException | None) -> bool:
    """Is this error (or the one it was raised from) a share that is away?"""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in UNREACHABLE:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
