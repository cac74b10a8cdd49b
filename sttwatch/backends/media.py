"""What a recording's container holds, read from its headers without decoding anything.

A film carries a video stream, one or more audio tracks (each tagged with a language as
ISO 639-2, ``eng``/``fra``, and one flagged as the default) and often subtitle streams. The
service needs one audio track, the one in the folder's language: this module says which,
and copies its packets into an audio-only file without re-encoding them (``remux``), so the
upload is the speech's own bytes and memory stays flat whatever the length.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..offline import unreachable
from .audio import av_input

if TYPE_CHECKING:
    from ..sharefile import Opener

# ISO 639-1 -> the 639-2 codes containers write (terminologic, then bibliographic where it
# differs). A tag of another language is compared as written.
_ISO639 = {
    "ar": ("ara",), "bg": ("bul",), "ca": ("cat",), "cs": ("ces", "cze"), "cy": ("cym", "wel"),
    "da": ("dan",), "de": ("deu", "ger"), "el": ("ell", "gre"), "en": ("eng",),
    "es": ("spa",), "et": ("est",), "eu": ("eus", "baq"), "fa": ("fas", "per"),
    "fi": ("fin",), "fr": ("fra", "fre"), "ga": ("gle",), "he": ("heb",), "hi": ("hin",),
    "hr": ("hrv",), "hu": ("hun",), "hy": ("hye", "arm"), "id": ("ind",), "is": ("isl", "ice"),
    "it": ("ita",), "ja": ("jpn",), "ka": ("kat", "geo"), "ko": ("kor",), "lt": ("lit",),
    "lv": ("lav",), "mk": ("mkd", "mac"), "ms": ("msa", "may"), "nl": ("nld", "dut"),
    "no": ("nor",), "nb": ("nob",), "nn": ("nno",), "pl": ("pol",), "pt": ("por",),
    "ro": ("ron", "rum"), "ru": ("rus",), "sk": ("slk", "slo"), "sl": ("slv",),
    "sq": ("sqi", "alb"), "sr": ("srp",), "sv": ("swe",), "th": ("tha",), "tr": ("tur",),
    "uk": ("ukr",), "vi": ("vie",), "zh": ("zho", "chi"),
}
UNDETERMINED = frozenset({"", "und", "unk", "mis", "mul", "zxx"})

# The service takes these codecs in a container of their own (shared/aimlapi-stt.md: mp3,
# m4a, ogg, opus, flac, wav...): the track's packets go there as they are.
REMUX = {"aac": ("ipod", ".m4a", "audio/mp4"), "opus": ("ogg", ".ogg", "audio/ogg"),
         "vorbis": ("ogg", ".ogg", "audio/ogg"), "mp3": ("mp3", ".mp3", "audio/mpeg"),
         "flac": ("flac", ".flac", "audio/flac")}
# Audio-only containers the service reads as they are (PyAV's format names).
ACCEPTED_FORMATS = frozenset({"mp3", "wav", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "aac",
                              "webm", "matroska,webm", "mp2", "mpeg"})


def language_key(tag: str | None) -> str | None:
    """One spelling per language (its 639-1 code where known), None for none/undetermined."""
    if tag is None:
        return None
    tag = tag.strip().lower().replace("_", "-").split("-")[0]
    if tag in UNDETERMINED:
        return None
    if tag in _ISO639:
        return tag
    for short, longs in _ISO639.items():
        if tag in longs:
            return short
    return tag


def same_language(tag: str | None, wanted: str | None) -> bool:
    key = language_key(tag)
    return key is not None and key == language_key(wanted)


@dataclass(frozen=True)
class Track:
    """One stream of the container: ``index`` is its index among all streams."""

    index: int
    kind: str  # "audio" | "video" | "subtitle" | ...
    codec: str
    language: str | None
    default: bool


@dataclass(frozen=True)
class MediaInfo:
    format: str
    tracks: tuple[Track, ...]

    def of_kind(self, kind: str) -> tuple[Track, ...]:
        return tuple(t for t in self.tracks if t.kind == kind)

    @property
    def has_video(self) -> bool:
        # A cover picture in an MP3 or M4A is a one-frame "video" stream; attached
        # pictures are not video for this purpose (the file is still audio).
        return any(t.kind == "video" and t.codec not in ("mjpeg", "png", "bmp", "gif")
                   for t in self.tracks)


def probe(path: Path, opener: Opener | None = None) -> MediaInfo | None:
    """The container's streams; None when PyAV cannot open it (the service judges it).
    A share that is away or hung raises (``offline.unreachable``): that is no verdict on
    the file."""
    import av

    try:
        with av_input(path, opener) as container:
            tracks = tuple(Track(
                s.index, s.type or "", _codec_name(s),
                (s.metadata or {}).get("language"),
                bool(int(s.disposition) & 1)) for s in container.streams)
            return MediaInfo(container.format.name, tracks)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if unreachable(exc):
            raise
        return None


# The probe of one file version, made when first asked for (``Probes.of``).
MediaProbe = Callable[[], "MediaInfo | None"]


class Probes:
    """The probe of each recent file version, so that a job's container is opened once:
    by the screen before its create, and then taken by the upload's preparation and the
    finisher's json header (each opening cost a few milliseconds of the daemon's CPU per
    file, three times over). A version is the job's (path, size, mtime_ns), as the store
    knows it: a file that changed is another version and is probed afresh. Only this
    process's memory, at most ``size`` versions, the least recently used dropped first:
    after a restart, or for a version dropped, the next caller probes again. A probe that
    raises (a share away or hung) is not kept."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._held: OrderedDict[tuple[str, int, int], MediaInfo | None] = OrderedDict()
        self._lock = threading.Lock()  # the submitter's and the finisher's threads share it
        self.probed = 0  # containers opened so far

    def of(self, path: Path, size: int, mtime_ns: int,
           opener: Opener | None = None) -> MediaProbe:
        """The probe of ``path`` as the version (``size``, ``mtime_ns``); ``opener`` reads
        it when it is not held yet."""
        key = (str(path), size, mtime_ns)
        return lambda: self._get(key, path, opener)

    def forget(self, path: Path, size: int, mtime_ns: int) -> None:
        """A version no stage will ask about again (its job is done)."""
        with self._lock:
            self._held.pop((str(path), size, mtime_ns), None)

    @property
    def held(self) -> int:
        """How many versions are kept now."""
        return len(self._held)

    def _get(self, key: tuple[str, int, int], path: Path,
             opener: Opener | None) -> MediaInfo | None:
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key]
        info = probe(path, opener)
        with self._lock:
            self.probed += 1
            self._held[key] = info
            self._held.move_to_end(key)
            while len(self._held) > self._size:
                self._held.popitem(last=False)
        return info


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec_context.name)
    except (AttributeError, ValueError):
        return ""


def choose_audio(info: MediaInfo, language: str | None) -> Track | None:
    """The track in ``language``, else the one flagged default, else the first."""
    audio = info.of_kind("audio")
    if not audio:
        return None
    if language:
        for t in audio:
            if same_language(t.language, language):
                return t
    return next((t for t in audio if t.default), audio[0])


def remux(path: Path, track: Track, target_stem: Path,
          opener: Opener | None = None) -> tuple[Path, str]:
    """Copy ``track``'s packets into an audio-only file (no decoding, no re-encoding):
    returns its path and mime type. Raises KeyError for a codec the service does not take
    in a container of its own."""
    import av

    fmt, suffix, mime = REMUX[track.codec]
    target = target_stem.with_suffix(suffix)
    with av_input(path, opener) as src, av.open(str(target), "w", format=fmt) as out:
        istream = src.streams[track.index]
        # PyAV 13 renamed add_stream(template=...) to add_stream_from_template(...).
        add = getattr(out, "add_stream_from_template", None)
        ostream: Any = add(istream) if add is not None else out.add_stream(template=istream)
        for packet in src.demux(istream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = ostream
            out.mux(packet)
    return target, mime
