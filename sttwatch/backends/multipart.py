"""The body of an upload: multipart/form-data streamed from an open file, a block at a time,
so memory stays flat whatever the file's size."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any


class Multipart:
    """A multipart/form-data body streamed from an open file, as an iterable of chunks of
    at most ``BLOCK`` bytes of the file (the first carries the form fields' parts, the last
    the closing boundary, so a small file's whole body goes in one write). Part headers
    are rendered as urllib3's ``RequestField`` renders them (``param``).

    The file is sent exactly at the size it had when opened: one that grows is cut there,
    so the body matches its Content-Length; one that shrinks raises ``SourceChanged``
    (a body short of its Content-Length would wait out the read timeout for an answer that
    cannot come). ``on_sent`` is told the body's bytes handed out so far, chunk by chunk."""

    BLOCK = 16384

    def __init__(self, fields: list[tuple[str, str]], file_field: str, name: str, fh: Any,
                 size: int, mime: str) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        dash = f"--{boundary}\r\n"
        head: list[str] = []
        for key, value in fields:
            head += (dash, f"Content-Disposition: form-data; {param('name', key)}\r\n\r\n",
                     value, "\r\n")
        head += (dash, f"Content-Disposition: form-data; {param('name', file_field)}; "
                       f"{param('filename', name)}\r\nContent-Type: {mime}\r\n\r\n")
        self._head = "".join(head).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._fh = fh
        self._size = size
        self.on_sent: Callable[[int], None] = lambda sent: None
        self.len = len(self._head) + size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        left, sent, chunk = self._size, 0, self._head
        while True:
            want = min(self.BLOCK, left)
            try:
                data: bytes = self._fh.read(want) if want else b""
            except OSError as exc:  # not as an OSError: that would pass for a network error
                raise SourceUnreadable(exc) from exc
            if len(data) < want:
                raise SourceChanged("the file got shorter while it was being uploaded")
            left -= want
            chunk = chunk + data if chunk else data
            if not left:
                chunk += self._tail
            sent += len(chunk)
            self.on_sent(sent)
            yield chunk
            if not left:
                return
            chunk = b""


def param(name: str, value: str) -> str:
    """A part header's ``name="value"``, quoted as the WHATWG form encoding (and urllib3's
    ``format_multipart_header_param``) does: line breaks and double quotes percent-encoded."""
    return f'{name}="{value.translate(_QUOTED)}"'


_QUOTED = {0x0A: "%0A", 0x0D: "%0D", 0x22: "%22"}


class SourceChanged(Exception):
    """The file got shorter while it was being sent (not an ``OSError``, which would pass
    for a connection failure)."""


class SourceUnreadable(Exception):
    """Reading the file failed mid-upload (its share went away, say): carried through the
    transport as a non-``OSError`` and raised again as the ``OSError`` it was."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error
