"""Transcript output formats (txt, json, srt, vtt) and atomic writing beside the source.

Each format is a small class registered by ``kind``; a new format is a new class. Formats
read the one ``Transcript`` model: ``render`` gets it from the result through the model's
profile (sttwatch/profiles/), so no writer knows any family's result shape. How cues are cut
lives in ``cues.py``.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from .cues import TXT_WIDTH, Cue, reading_paragraphs, subtitle_cues
from .errors import RenderError
from .profiles import profile_for_header
from .transcript_model import Transcript, output_language, speaker_name

__all__ = ["FORMATS", "Cue", "Format", "RenderError", "get_format", "language_of",
           "render_all", "subtitle_cues", "transcript_of", "write_atomic"]


def transcript_of(result: Mapping[str, Any], header: Mapping[str, Any]) -> Transcript:
    """The result read by the profile of the header's ``model`` and ``backend``. Raises
    RenderError when no known shape fits."""
    return profile_for_header(header).parse(result)


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

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any],
               transcript: Transcript | None = None) -> str:
        """Turn a finished result into file text; ``header`` describes the job (its
        ``model`` and ``backend`` choose the profile). Pass ``transcript`` when the caller
        has read the result already. Raises RenderError on a result no profile can read."""
        if transcript is None:
            transcript = transcript_of(result, header)
        return self.write(transcript, result, header)

    def write(self, transcript: Transcript, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        raise NotImplementedError


FORMATS: Mapping[str, type[Format]] = MappingProxyType(Format._registry)


def get_format(kind: str) -> Format:
    """Fail with the known names, since an unknown kind is almost always a config typo."""
    if kind not in FORMATS:
        raise ValueError(f"unknown output format {kind!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[kind]()


def language_of(result: Mapping[str, Any], header: Mapping[str, Any],
                configured: Any = None) -> str:
    """What ``{lang}`` in ``output.name`` becomes for this result: the language it reports,
    else ``configured`` (the job's ``language`` option), else "und". Never raises, since
    even an unreadable result gets its json output written under this name."""
    try:
        transcript: Transcript | None = transcript_of(result, header)
    except RenderError:
        transcript = None
    return output_language(transcript, configured)


def render_all(formats: Sequence[str], result: Mapping[str, Any],
               header: Mapping[str, Any]) -> list[str]:
    """Every format's text, reading the result once. Raises RenderError before producing
    anything when the result cannot be read."""
    transcript = transcript_of(result, header)
    return [get_format(kind).write(transcript, result, header) for kind in formats]


class TextFormat(Format, kind="txt"):
    """Plain text for reading and grepping, in paragraphs when the service found them, each
    opened by its speaker ("Speaker 1: ...") when the service told speakers apart."""

    def write(self, transcript: Transcript, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        paragraphs = reading_paragraphs(transcript)
        if not paragraphs:
            return ""
        return "\n\n".join(
            textwrap.fill((f"{speaker_name(p.speaker)}: " if p.speaker else "") + p.text,
                          TXT_WIDTH, break_long_words=False, break_on_hyphens=False)
            for p in paragraphs) + "\n"


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
    """The whole result plus the job header, so nothing the service said is lost, and the
    normalized ``transcript`` fields. Never fails on a result it cannot read: that result is
    exactly what must be kept, so it is written with ``transcript: null`` and the reason."""

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any],
               transcript: Transcript | None = None) -> str:
        try:
            return super().render(result, header, transcript)
        except RenderError as exc:
            return self._dump({"sttwatch": header, "result": result, "transcript": None,
                               "render_error": str(exc)})

    def write(self, transcript: Transcript, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        return self._dump({"sttwatch": header, "result": result,
                           "transcript": transcript.as_json()})

    @staticmethod
    def _dump(body: Mapping[str, Any]) -> str:
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

    def speaker(self, name: str) -> str:
        """What opens the first line of a cue spoken by ``name``."""
        raise NotImplementedError

    def write(self, transcript: Transcript, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        blocks = []
        for n, cue in enumerate(subtitle_cues(transcript), 1):
            times = " --> ".join(_timestamp(ms, self.decimal) for ms in (cue.start_ms, cue.end_ms))
            lines = [self.escape(line) for line in cue.lines]
            if cue.speaker and lines:
                lines[0] = self.speaker(cue.speaker) + lines[0]
            blocks.append("\n".join([str(n)] * self.numbered + [times, *lines, ""]))
        return "\n".join([*self.preamble, *blocks])


class SrtFormat(_Subtitles, kind="srt"):
    """SubRip, the subtitle format nearly every player accepts; it has no speaker markup, so
    the speaker is written out ("Speaker 1: ")."""

    def speaker(self, name: str) -> str:
        return f"{name}: "


class VttFormat(_Subtitles, kind="vtt"):
    """WebVTT for browsers; cue text is markup there, hence the escaping of & < >."""

    decimal, numbered, preamble = ".", False, ("WEBVTT\n",)

    def escape(self, line: str) -> str:
        return html.escape(line, quote=False)

    def speaker(self, name: str) -> str:
        """A voice span, which players can style or show; ``>`` would end the tag early."""
        return f"<v {html.escape(name, quote=False)}>"


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
