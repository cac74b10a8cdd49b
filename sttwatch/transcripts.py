"""Where a job's files go, and how a stored result becomes files there.

The one place that knows the naming rule (template, optional mirror folder, the fallback name
that keeps ``talk.mp3`` and ``talk.wav`` from overwriting each other), the error sidecar and
what happens to the source afterwards, so the writer and the scanner can never disagree.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import OutputConfig
from .outputs import SHORT_NAME, Layout, fit_name, name_max, render_all, write_atomic
from .sharefile import PathCall, direct
from .store import Job
from .transcript_model import UNDETERMINED

ERROR_SUFFIX = ".sttwatch-error.json"
ANY_LANG = "\x00"  # stands for any language in a name (never in a real file name)
# What write_atomic's mkstemp leaves when the process is killed mid-write:
# ".talk.txt.k3j_9x2a.tmp". Only names of our own outputs match.
MAX_NUMBERED = 10_000  # talk.wav.9999.txt is the last name one source may be given
LEFTOVER = re.compile(r"^\..+\.(txt|json|srt|vtt)\.[a-z0-9_]{8}\.tmp$")


@dataclass(frozen=True)
class Placement:
    """The output rule for one source: its watch root, formats and the configured naming."""

    source: Path
    root: Path
    formats: tuple[str, ...]
    output: OutputConfig

    def folder(self) -> Path:
        if self.output.dir is None:
            return self.source.parent
        return self.output.dir / self.source.parent.relative_to(self.root)

    def keys(self) -> tuple[str, str]:
        """The preferred name pattern and the fallback with the source's extension in it;
        ``{format}`` and ``{lang}`` are left in place so one key covers every format and
        the key is known before the result says which language it is."""
        t, s = self.output.name, self.source
        first = t.format(stem=s.stem, name=s.name, format="{format}", lang="{lang}")
        second = t.format(stem=s.name, name=s.name, format="{format}", lang="{lang}")
        if second == first:
            second = f"{s.name}.{{format}}"
        return str(self.folder() / first), str(self.folder() / second)

    def numbered(self, n: int) -> str:
        """The ``n``-th name after the usual two: ``talk.wav.2.txt`` (the source's whole name,
        then the number), for when both of those are another source's."""
        t, s = self.output.name, self.source
        return str(self.folder() / t.format(stem=f"{s.name}.{n}", name=f"{s.name}.{n}",
                                            format="{format}", lang="{lang}"))

    def all_keys(self) -> Iterator[str]:
        """Every name this source may claim, preferred first."""
        yield from self.keys()
        for n in range(2, MAX_NUMBERED):
            yield self.numbered(n)

    def on_disk(self, key: str) -> bool:
        """Whether any transcript of ``key`` exists (in any language)."""
        return any(existing(p) for p in self.paths(key, ANY_LANG))

    def paths(self, key: str | None = None, lang: str = UNDETERMINED) -> list[Path]:
        """The files of ``key``; ``lang`` fills ``{lang}`` (transcript_model.output_language
        gives it from the result)."""
        pattern = (key or self.keys()[0]).replace("{lang}", lang)
        return [fit_path(Path(pattern.replace("{format}", kind))) for kind in self.formats]


def fit_path(path: Path, suffix: str | None = None) -> Path:
    """``path`` with its name shortened (extension kept, hash of the full name added) when
    it is longer than the filesystem takes: the writer, the scanner and the up-to-date check
    all name the file through here, so they agree."""
    if len(os.fsencode(path.name)) <= SHORT_NAME:
        return path
    return path.with_name(fit_name(path.name, name_max(path.parent), suffix))


# Write errors that waiting cannot cure: the name or the place is wrong, not the moment.
# EROFS, ENOSPC, EDQUOT, EACCES, EPERM, ENOENT, EIO stay retryable: a remount, freed space,
# fixed permissions or a share that comes back cure them.
PERMANENT_WRITE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR,
                                    errno.ELOOP, errno.EEXIST, errno.EILSEQ})


def write_error_is_permanent(exc: OSError) -> bool:
    """Should a failed transcript write fail the job (True) rather than be retried later?"""
    return exc.errno in PERMANENT_WRITE_ERRNOS


def source_mode(source: Path) -> int:
    """The permission bits our files about ``source`` get: its read/write bits, never more
    (write_atomic then applies the umask). A source that cannot be read for its mode gets
    owner-only files: unknown is treated as private."""
    try:
        return os.stat(source).st_mode & 0o666
    except OSError:
        return 0o600


def existing(path: Path) -> list[Path]:
    """The files ``path`` names; ``ANY_LANG`` in its name stands for any language tag."""
    if ANY_LANG not in path.name:
        return [path] if path.exists() else []
    tag = re.compile("[a-z]{2,3}".join(map(re.escape, path.name.split(ANY_LANG))))
    return sorted(p for p in path.parent.glob(glob.escape(path.name).replace(ANY_LANG, "*"))
                  if tag.fullmatch(p.name))


def up_to_date(place: Placement, source_mtime_ns: int, key: str | None = None) -> bool:
    """Every transcript (of ``key``, default the first name) exists and is newer than the
    source: nothing to do for this file."""
    try:
        return all(any(p.stat().st_mtime_ns >= source_mtime_ns for p in existing(path))
                   for path in place.paths(key, lang=ANY_LANG))
    except OSError:
        return False


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def header(job: Job, backend: str, model: str, now: float) -> dict[str, Any]:
    """Our part of the json output: enough to tell which file and which run made it."""
    source = Path(job.path)
    return {"source": str(source), "size": job.size,
            "sha256": job.sha256 or _sha256(source),
            "backend": backend, "model": model, "generation_id": job.generation_id,
            "created": iso(job.submitted_at), "finished": iso(now), "cost": job.cost,
            **({"timeline": [list(p) for p in job.timeline]} if job.timeline else {})}


def write_transcripts(paths: Sequence[Path], formats: Sequence[str],
                      result: Mapping[str, Any], job_header: Mapping[str, Any],
                      source: Path | None = None, run: PathCall = direct,
                      layout: Layout | None = None) -> None:
    """Render every format first, then write each atomically: a render error leaves no file.
    ``layout`` is the result already read (outputs.layout_of); without it, read here.
    The files take the permission bits of ``source`` (default: the header's ``source``).
    Each file's write (folder, temp file, fsync, rename) is one ``run`` call: the daemon's
    runs it on that folder's mount worker with the deadline (sharefile.py), so a share that
    hangs mid-write raises ``ShareHung`` here; the temp file and rename keep a torn
    transcript from ever standing under its name."""
    texts = render_all(formats, result, job_header, layout)
    rendered = list(zip(paths, texts, strict=True))
    origin = source if source is not None else job_header.get("source")
    mode = run(Path(origin), lambda: source_mode(Path(origin))) if origin is not None \
        else 0o600
    for path, text in rendered:
        run(path, functools.partial(_write_one, path, text, mode))


def _write_one(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode)


def error_file(source: Path) -> Path:
    return fit_path(source.with_name(source.name + ERROR_SUFFIX), ERROR_SUFFIX)


def write_error(source: Path, reason: str, attempts: int, now: float) -> None:
    doc = {"source": str(source), "reason": reason, "attempts": attempts, "when": iso(now)}
    write_atomic(error_file(source), json.dumps(doc, indent=2) + "\n", source_mode(source),
                 suffix=ERROR_SUFFIX)


def clear_error(source: Path) -> None:
    error_file(source).unlink(missing_ok=True)


def tidy_source(place: Placement, size: int, mtime_ns: int) -> dict[str, Any] | None:
    """After every transcript is written: drop the error sidecar and apply ``on_done``, but
    only to the version that was transcribed (a file rewritten meanwhile stays). Returns
    the event to log, if any."""
    clear_error(place.source)
    if place.output.on_done == "keep":
        return None
    st = place.source.stat()
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        return {"event": "source_changed_not_disposed"}
    moved = dispose_source(place)
    return {"event": "source_disposed", "action": place.output.on_done,
            "to": str(moved) if moved else None}


def sweep_leftovers(root: Path, min_age: float, now: float) -> list[Path]:
    """Remove half-written temp files a killed process left under ``root``. Young ones are
    left alone: another writer may still be busy with them. Runs at every start over the
    whole library: a name is judged before anything is made or asked of its file (leftovers
    are hidden names), so a folder costs one listing."""
    removed = []
    stack = [os.fspath(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                        continue
                    if not (e.name.startswith(".") and LEFTOVER.match(e.name)) or e.is_dir():
                        continue
                    if now - e.stat().st_mtime >= min_age:
                        os.unlink(e.path)
                        removed.append(Path(e.path))
                except OSError:
                    continue
    return removed


def dispose_source(place: Placement) -> Path | None:
    """``output.on_done``: keep the source, move it into ``done_dir`` (mirrored), or delete
    it. Runs only after every transcript is safely written. Returns where it went."""
    action = place.output.on_done
    if action == "delete":
        place.source.unlink(missing_ok=True)
        return None
    if action == "move" and place.output.done_dir is not None:
        target = place.output.done_dir / place.source.relative_to(place.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            target = target.with_name(f"{target.stem}.{int(place.source.stat().st_mtime)}"
                                      f"{target.suffix}")
        shutil.move(str(place.source), str(target))
        return target
    return place.source
