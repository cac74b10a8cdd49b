"""A watched file on a share read through its mount's worker, one block at a time, each with
the deadline (a file on a local filesystem is opened plainly: watcher.py).

The hash of a recording and its upload read the whole file: an hour-long one on a slow share
takes far longer than any sensible deadline, so the deadline cannot be on the whole read
(fsgate.py). It is on each block instead: ``read`` asks the worker for the next block (1 MiB)
and serves smaller reads (the upload's 8 KiB ones) from it, so a share that stops answering
*during* the read raises ``ShareHung`` within the deadline on the thread that reads, and that
thread goes on with other work. Open, seek and close go the same way; close is only queued
(``FsGate.post``): it must not block, and must still happen once the share answers.

The file is read with ``os.read`` on a raw descriptor: the worker never writes into a buffer
the caller owns, so a read that returns after its caller gave up harms nothing.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

from .fsgate import FsGate, ShareHung

BLOCK = 1 << 20  # bytes asked of the worker per call
T = TypeVar("T")


class Source(Protocol):
    """What the hash and the upload need of an open recording."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...


Opener = Callable[[Path], Source]


def plain_open(path: Path) -> Source:
    """No gate: a file opened on the calling thread (the CLI's ``transcribe``, tests)."""
    return path.open("rb")


class PathCall(Protocol):
    """``watcher.Watcher.call``: ``fn()``, a call about ``path``, on its mount's worker (or
    here, on a local filesystem)."""

    def __call__(self, path: Path, fn: Callable[[], T], /) -> T: ...


def direct(_path: Path, fn: Callable[[], T]) -> T:
    return fn()


def _always(_path: Path) -> bool:
    return True


@dataclass(frozen=True)
class Shares:
    """How the stages touch files under the watches: whether a folder is online now, a
    short call with the deadline, and a file read a block at a time with it (on a local
    filesystem: the call made here, a plain file). The daemon's are its watcher's
    (wiring.py); the defaults touch files directly (``transcribe``)."""

    is_online: Callable[[Path], bool] = field(default=_always)
    call: PathCall = field(default=direct)
    open: Opener = field(default=plain_open)


class ShareFile(io.RawIOBase):
    """A read-only binary file whose every system call runs on the worker of mount ``key``."""

    def __init__(self, gate: FsGate, key: str, path: Path, block: int = BLOCK) -> None:
        super().__init__()
        self._gate = gate
        self._key = key
        self._what = str(path)
        self._block = block
        self._buf = b""  # the last block the worker read, served from ``_off`` on
        self._off = 0
        self._pos = 0  # where the next byte served comes from
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        given_up = threading.Event()

        def opening() -> int:
            fd = os.open(path, flags)
            if given_up.is_set():  # the caller went on without it: not leaked
                os.close(fd)
            return fd

        self._fd: int | None = None
        try:
            self._fd = gate.call(key, opening, self._what)
        except ShareHung:
            given_up.set()
            raise

    def _call_fd(self) -> int:
        if self._fd is None:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the file (as a buffered file reads)."""
        fd = self._call_fd()
        if size is None or size < 0:
            return self.readall()
        parts = []
        want = size
        while want > 0:
            if self._off >= len(self._buf):
                ask = max(want, self._block)
                self._buf = self._gate.call(self._key, functools.partial(os.read, fd, ask),
                                            self._what)
                self._off = 0
                if not self._buf:
                    break  # the end of the file
            part = self._buf[self._off:self._off + want]
            self._off += len(part)
            want -= len(part)
            parts.append(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        parts = []
        while block := self.read(self._block):
            parts.append(block)
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        fd = self._call_fd()
        if whence == os.SEEK_CUR:
            offset, whence = self._pos + offset, os.SEEK_SET
        self._buf, self._off = b"", 0
        self._pos = self._gate.call(self._key, lambda: os.lseek(fd, offset, whence),
                                    self._what)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        fd = self._call_fd()
        return self._gate.call(self._key, lambda: os.fstat(fd).st_size, self._what)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._gate.post(self._key, lambda: os.close(fd))
        super().close()
