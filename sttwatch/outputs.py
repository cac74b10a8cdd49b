"""Transcript output formats (txt, json, srt, vtt) and atomic writing beside the source.

Each format is a small class registered by ``kind``; a new format is a new class. How cues
are cut from a result lives in ``cues.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import html
import json
import os
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from .cues import TXT_WIDTH, Cue, paragraph_texts, subtitle_cues, transcript_text

__all__ = ["FORMATS", "Cue", "Format", "get_format", "subtitle_cues", "transcript_text",
           "write_atomic"]


class Format:
    """An output format; subclassing with ``kind=...`` registers it so config can name it."""

    kind: ClassVar[str]
    suffix: ClassVar[str]
    _registry: ClassVar[dict[str, type[Format]]] = {}

    def __init_subclass__(cls, /, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is None:  # a shared base, not a format of its own
            return
        if kind in Format._registry:
            raise ValueError(f"output format {kind!r} is already registered")
        cls.kind = kind
        cls.suffix = cls.__dict__.get("suffix", "." + kind)
        Format._registry[kind] = cls

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any]) -> str:
        """Turn a finished result into file text; ``header`` describes the job."""
        raise NotImplementedError


FORMATS: Mapping[str, type[Format]] = MappingProxyType(Format._registry)


def get_format(kind: str) -> Format:
    """Fail with the known names, since an unknown kind is almost always a config typo."""
    if kind not in FORMATS:
        raise ValueError(f"unknown output format {kind!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[kind]()


class TextFormat(Format, kind="txt"):
    """Plain text for reading and grepping, in paragraphs when the service found them."""

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any]) -> str:
        if not transcript_text(result):
            return ""
        return "\n\n".join(textwrap.fill(p, TXT_WIDTH, break_long_words=False,
                                         break_on_hyphens=False)
                           for p in paragraph_texts(result)) + "\n"


def _json_default(value: Any) -> Any:
    """Headers may carry paths, datetimes or read-only mappings; store them as plain JSON."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON transcript")


class JsonFormat(Format, kind="json"):
    """The whole result plus the job header, so nothing the service said is lost."""

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any]) -> str:
        body = {"sttwatch": header, "result": result}
        return json.dumps(body, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _timestamp(ms: int, decimal: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"


class _Subtitles(Format):
    """Shared cue layout; the subtitle formats differ only in framing and escaping."""

    decimal: ClassVar[str] = ","
    numbered: ClassVar[bool] = True
    preamble: ClassVar[tuple[str, ...]] = ()

    def escape(self, line: str) -> str:
        return line

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any]) -> str:
        blocks = []
        for n, cue in enumerate(subtitle_cues(result), 1):
            times = " --> ".join(_timestamp(ms, self.decimal) for ms in (cue.start_ms, cue.end_ms))
            lines = [self.escape(line) for line in cue.lines]
            blocks.append("\n".join([str(n)] * self.numbered + [times, *lines, ""]))
        return "\n".join([*self.preamble, *blocks])


class SrtFormat(_Subtitles, kind="srt"):
    """SubRip, the subtitle format nearly every player accepts."""


class VttFormat(_Subtitles, kind="vtt"):
    """WebVTT for browsers; cue text is markup there, hence the escaping of & < >."""

    decimal, numbered, preamble = ".", False, ("WEBVTT\n",)

    def escape(self, line: str) -> str:
        return html.escape(line, quote=False)


def write_atomic(path: Path, text: str) -> None:
    """Readers (players, sync tools, the daemon after a crash) must see the old file or the
    whole new one, never a torn write: hence temp file, fsync, rename, directory fsync."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide transcripts from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; the rename stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(dir_fd)
