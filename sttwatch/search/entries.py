"""What is indexed for a recording: the cues of its stored result (the same cues its srt and
vtt show, on the recording's clock when the upload was trimmed), or, for a recording
transcribed before sttwatch saw it, the cues of the srt or vtt beside it (the paragraphs of
its txt, untimed, when that is all there is)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cues import Layout
from ..outputs import layout_of
from ..store import Job, Plan
from ..store.search import IndexedCue, IndexedTranscript
from ..timeline import Timeline
from ..transcript_model import speaker_name

FILE_KINDS = ("srt", "vtt", "txt")  # the transcript files a reindex reads, best first


def cues_of_result(result: Mapping[str, Any], model: str, backend: str,
                   timeline: Timeline | None = None) -> tuple[IndexedCue, ...]:
    """Raises RenderError when no profile reads the result (nothing to index then)."""
    header: dict[str, Any] = {"model": model, "backend": backend}
    if timeline:
        header["timeline"] = [list(p) for p in timeline]
    return cues_of_layout(layout_of(result, header))


def cues_of_layout(layout: Layout) -> tuple[IndexedCue, ...]:
    """The cues the srt and vtt show (the paragraphs, untimed, when there are none)."""
    cues = tuple(IndexedCue(c.start_ms / 1000, c.end_ms / 1000, c.speaker, " ".join(c.lines))
                 for c in layout.cues)
    if cues or not layout.transcript.text:
        return cues
    return tuple(IndexedCue(None, None, speaker_name(p.speaker) if p.speaker else None,
                            p.text) for p in layout.paragraphs)


def document_of_job(job: Job, plan: Plan, layout: Layout | None = None) -> IndexedTranscript:
    """``layout``: the job's result as its transcripts were just written from (the same
    header: its plan's model and backend, its timeline); read here when not given."""
    assert job.result is not None
    cues = cues_of_layout(layout) if layout is not None else cues_of_result(
        job.result, plan.model, plan.backend, job.timeline)
    return IndexedTranscript(job.path, job.id, plan.model, job.mtime_ns / 1e9, cues)


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")
_ARROW = re.compile(rf"^\s*({_TIME.pattern})\s*-->\s*({_TIME.pattern})")
_VOICE = re.compile(r"^<v(?:\.[^ >]*)?\s+([^>]*)>")
_SRT_SPEAKER = re.compile(r"^(Speaker \d+): ")  # what sttwatch writes; a "Note: " is text
_TAG = re.compile(r"<[^>]*>")


def _seconds(raw: str) -> float:
    m = _TIME.fullmatch(raw)
    assert m is not None
    h, mi, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def subtitle_file_cues(text: str, vtt: bool) -> tuple[IndexedCue, ...]:
    """Cues of an srt or vtt file: each block's times line and the text under it; a
    speaker from vtt's voice span or srt's "Name: " opening."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.strip("\n").split("\n")
        at = next((i for i, line in enumerate(lines) if _ARROW.match(line)), None)
        if at is None:
            continue
        m = _ARROW.match(lines[at])
        assert m is not None
        body = [line.strip() for line in lines[at + 1:] if line.strip()]
        if not body:
            continue
        speaker = None
        first = body[0]
        if vtt and (v := _VOICE.match(first)):
            speaker = html.unescape(v.group(1).strip()) or None
        elif not vtt and (s := _SRT_SPEAKER.match(first)):
            speaker, body[0] = s.group(1), first[s.end():]
        joined = " ".join(_TAG.sub("", line) for line in body)
        text_ = html.unescape(joined) if vtt else joined
        out.append(IndexedCue(_seconds(m.group(1)), _seconds(m.group(6)), speaker,
                              " ".join(text_.split())))
    return tuple(out)


def text_file_cues(text: str) -> tuple[IndexedCue, ...]:
    """A txt has no times: its paragraphs, each a cue without a start."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if not flat:
            continue
        speaker = None
        if s := _SRT_SPEAKER.match(flat):
            speaker, flat = s.group(1), flat[s.end():]
        out.append(IndexedCue(None, None, speaker, flat))
    return tuple(out)


def cues_of_file(path: Path) -> tuple[IndexedCue, ...]:
    text = path.read_text(encoding="utf-8", errors="replace")
    kind = path.suffix.lower().lstrip(".")
    if kind in ("srt", "vtt"):
        return subtitle_file_cues(text, vtt=kind == "vtt")
    return text_file_cues(text)
