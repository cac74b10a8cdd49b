"""Transcript output formats (txt, json, srt, vtt) and atomic writing beside the source.

Each format is a small class registered by ``kind``; a new format is a new class. Formats
read the one ``Transcript`` model: ``render`` gets it from the result through the model's
profile (sttwatch/profiles/), so no writer knows any family's result shape. How cues are cut
lives in ``cues.py``; a format writes from the transcript's ``Layout``, which a finish reads
once for every format and the search entries (``layout_of``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import html
import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from .cues import TXT_WIDTH, Cue, Layout, subtitle_cues
from .errors import RenderError
from .profiles import profile_for_header
from .timeline import parse as parse_timeline
from .timeline import remap
from .transcript_model import Transcript, output_language, speaker_name

__all__ = ["FORMATS", "Cue", "Format", "Layout", "RenderError", "fit_name", "get_format",
           "language_of", "layout_of", "name_max", "readable", "render_all", "subtitle_cues",
           "transcript_of", "write_atomic"]


def transcript_of(result: Mapping[str, Any], header: Mapping[str, Any]) -> Transcript:
    """The result read by the profile of the header's ``model`` and ``backend``, its times
    put back on the recording's clock when the upload was trimmed (the header's
    ``timeline``: the one place the map is applied). Raises RenderError when no known shape
    fits."""
    transcript = profile_for_header(header).parse(result)
    try:
        timeline = parse_timeline(header.get("timeline"))
    except (TypeError, ValueError) as exc:
        raise RenderError(f"the job's timeline is unreadable: {exc}") from None
    return remap(transcript, timeline)


def layout_of(result: Mapping[str, Any], header: Mapping[str, Any]) -> Layout:
    """The result read once (``transcript_of``), for the language in the names, every
    format and the search entries to share, with its cues cut once. Raises RenderError when
    no known shape fits."""
    return Layout(transcript_of(result, header))


def readable(result: Mapping[str, Any], header: Mapping[str, Any]) -> Layout | None:
    """``layout_of``, or None when no profile reads the result: it still gets a name
    (``output_language``) and its json output; rendering it says why."""
    try:
        return layout_of(result, header)
    except RenderError:
        return None


class Format:
    """An output format; subclassing with ``kind=...`` registers it so config can name it."""

    kind: ClassVar[str]
    suffix: ClassVar[str]
    # Writes a result no profile reads as it is, with the reason, instead of raising.
    keeps_unreadable: ClassVar[bool] = False
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
        return self.write(Layout(transcript), result, header)

    def write(self, layout: Layout, result: Mapping[str, Any],
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
    layout = readable(result, header)
    return output_language(layout.transcript if layout else None, configured)


def render_all(formats: Sequence[str], result: Mapping[str, Any],
               header: Mapping[str, Any], layout: Layout | None = None) -> list[str]:
    """Every format's text, reading the result once (pass ``layout`` when the caller has
    read it: ``layout_of``). Raises RenderError before producing anything when the result
    cannot be read, unless every format keeps such a result (the json the finisher writes
    of a result it fails, for ``retry --render``)."""
    if layout is None:
        try:
            layout = layout_of(result, header)
        except RenderError:
            if not all(get_format(kind).keeps_unreadable for kind in formats):
                raise
            return [get_format(kind).render(result, header) for kind in formats]
    return [get_format(kind).write(layout, result, header) for kind in formats]


class TextFormat(Format, kind="txt"):
    """Plain text for reading and grepping, in paragraphs when the service found them, each
    opened by its speaker ("Speaker 1: ...") when the service told speakers apart."""

    def write(self, layout: Layout, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        paragraphs = layout.paragraphs
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

    keeps_unreadable = True

    def render(self, result: Mapping[str, Any], header: Mapping[str, Any],
               transcript: Transcript | None = None) -> str:
        try:
            return super().render(result, header, transcript)
        except RenderError as exc:
            return self._dump({"sttwatch": header, "result": result, "transcript": None,
                               "render_error": str(exc)})

    def write(self, layout: Layout, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        return self._dump({"sttwatch": header, "result": result,
                           "transcript": layout.transcript.as_json()})

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

    def write(self, layout: Layout, result: Mapping[str, Any],
              header: Mapping[str, Any]) -> str:
        blocks = []
        for n, cue in enumerate(layout.cues, 1):
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


TEMP_EXTRA = len(".") + len(".") + 8 + len(".tmp")  # ".{name}.{8 chars}.tmp"
SHORT_NAME = 128  # bytes; every filesystem in use takes names this long (eCryptfs: 143)
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the filesystem under ``folder`` takes; the nearest
    existing ancestor answers for a folder not made yet."""
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def fit_name(name: str, limit: int, suffix: str | None = None) -> str:
    """``name`` if it fits in ``limit`` bytes, else a shortened name that keeps ``suffix``
    (default: the last extension) and ends the stem with a short hash of the full name, so
    the same long name always maps to the same short one and two long names rarely collide."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    if suffix is None or not name.endswith(suffix):
        suffix = os.path.splitext(name)[1]
    tag = "~" + hashlib.sha256(raw).hexdigest()[:10]
    room = limit - len(os.fsencode(tag + suffix))
    return _cut(os.fsencode(name[: len(name) - len(suffix)]), max(room, 1)) + tag + suffix


def _cut(raw: bytes, room: int) -> str:
    """The first ``room`` bytes, cut on a character boundary: half a UTF-8 sequence is not a
    valid name everywhere. Names that are not UTF-8 keep their bytes as they are."""
    cut = raw[:room]
    for drop in range(4):
        try:
            return cut[: len(cut) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return os.fsdecode(cut)


def _open_temp(path: Path, mode: int, suffix: str | None) -> tuple[int, str]:
    """Create the temp file with ``mode`` so the kernel applies the process umask (no chmod
    afterwards that could widen it); its name fits the filesystem even when ``path``'s
    own name is close to the limit."""
    base = path.name
    if len(os.fsencode(base)) + TEMP_EXTRA > SHORT_NAME:  # only long names cost a pathconf
        base = fit_name(base, name_max(path.parent) - TEMP_EXTRA, suffix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        # One read of the system's randomness (secrets.choice made one per character).
        tag = "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in os.urandom(8))
        tmp = os.path.join(path.parent, f".{base}.{tag}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def write_atomic(path: Path, text: str, mode: int = 0o666, *,
                 suffix: str | None = None) -> None:
    """Readers (players, sync tools, the daemon after a crash) must see the old file or the
    whole new one, never a torn write: hence temp file, fsync, rename, directory fsync.

    ``mode`` is reduced by the process umask (a unit's ``UMask=0027`` holds); callers pass
    the source recording's bits so a private recording gets a private transcript. ``suffix``
    is kept when the temp name has to be shortened (it defaults to the last extension)."""
    path = Path(path)
    fd, tmp = _open_temp(path, mode & 0o666, suffix)
    try:
        # Plain writes of the encoded text: a file object would ask whether the file is a
        # terminal and where it stands, a few system calls a transcript for nothing.
        try:
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
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
