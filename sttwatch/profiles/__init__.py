"""Model profiles: what differs between the model families one endpoint serves.

A profile knows three things about its family: the multipart field the file goes in, how the
generic options (``language``, ``detect_language``, ``diarize``, ``speakers``, ``keywords``)
are named for it, and how its result becomes the one ``Transcript`` the writers read. A new
family is a new module in this package whose class passes ``family=`` when subclassing and
is listed in ``_MODULES``. ``profile_for(model)`` is the lookup; a model no family claims
gets the pass-through profile (options as written, Deepgram-shaped parsing), with a warning
once. docs/models.md lists the families and their options.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from ..errors import RenderError
from ..transcript_model import Span, Transcript, Word, speaker_label
from . import loose

log = structlog.get_logger("sttwatch.profiles")

GENERIC_OPTIONS = ("language", "detect_language", "diarize", "speakers", "keywords")
# Modules holding the families, in lookup order; each registers its class when imported.
_MODULES = ("openai", "assemblyai", "deepgram", "whisper", "local")
# A value in ``option_names`` meaning "the model does this anyway: send nothing, no warning".
AUTOMATIC = ""


@dataclass(frozen=True)
class Profile:
    """Base of every family."""

    model: str
    family: ClassVar[str] = "pass-through"
    backend: ClassVar[str] = "aimlapi"
    # Full-match, case-insensitive patterns of the model names this family serves.
    models: ClassVar[tuple[str, ...]] = ()
    file_field: ClassVar[str] = "audio"
    # When another family's result arrives, shapes are tried strictest first: a looser one
    # (OpenAI's bare ``text``) would also accept, and misread, a stricter one's result.
    looseness: ClassVar[int] = 0
    # Generic option -> the model's own name; a generic option missing here is unsupported.
    option_names: ClassVar[Mapping[str, str]] = {k: k for k in GENERIC_OPTIONS}
    registry: ClassVar[dict[str, type[Profile]]] = {}

    def __init_subclass__(cls, /, family: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family is None:  # a shared base, not a family of its own
            return
        if family in Profile.registry:
            raise ValueError(f"model family {family!r} is already registered")
        cls.family = family
        Profile.registry[family] = cls

    @classmethod
    def serves(cls, model: str) -> bool:
        return any(re.fullmatch(p, model, re.IGNORECASE) for p in cls.models)

    # --- the create request ------------------------------------------------------------------

    def create_fields(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The create fields for ``options`` (without ``model`` and the file). Generic names
        are translated; any other name is the model's own and passes unchanged, and wins over
        a translated generic option naming the same field. Unsupported generic options are
        dropped with a warning (once per model and option)."""
        fields = {k: v for k, v in options.items() if k not in GENERIC_OPTIONS}
        if options.get("speakers") is not None and "diarize" not in options:
            options = {**options, "diarize": True}  # a speaker count only means anything so
        for name in GENERIC_OPTIONS:
            value = options.get(name)
            if value is None:
                continue
            target = self.option_name(name)
            if target is None:
                _warn_once("option_not_supported", self.model, name)
            elif target != AUTOMATIC:
                fields.setdefault(target, self.convert(name, value))
        return fields

    def option_name(self, name: str) -> str | None:
        """This model's name for generic option ``name``; None when unsupported."""
        return self.option_names.get(name)

    def convert(self, name: str, value: Any) -> Any:
        """A generic option's value in the model's form; keywords become a list."""
        return keyword_list(value) if name == "keywords" else value

    def unsupported(self, options: Mapping[str, Any]) -> list[str]:
        """Generic options this model ignores, for ``sttwatch check`` to name."""
        return [k for k in GENERIC_OPTIONS
                if options.get(k) is not None and self.option_name(k) is None]

    # --- the result --------------------------------------------------------------------------

    @staticmethod
    def read(result: Mapping[str, Any]) -> Transcript | None:
        """This family's result shape as a Transcript; None when ``result`` is not that shape."""
        from .deepgram import read_deepgram
        return read_deepgram(result)

    def parse(self, result: Any) -> Transcript:
        """The result as a Transcript: this family's shape first, then every other known
        shape (the endpoint may normalise results; nothing was checked live). Raises
        RenderError when no shape fits, naming the keys it saw."""
        if not isinstance(result, Mapping):
            raise RenderError(f"result is a {type(result).__name__}, not an object")
        others = sorted(_families(), key=lambda c: c.looseness)
        readers = dict.fromkeys([type(self).read, *(c.read for c in others)])  # no repeats
        for read in readers:
            if (transcript := read(result)) is not None:
                return transcript
        keys = ", ".join(sorted(map(str, result))[:12]) or "none"
        raise RenderError(f"result of model {self.model!r} has no transcript in any known "
                          f"shape (Deepgram results.channels[0], AssemblyAI or OpenAI text); "
                          f"its keys: {keys}")


class PassThrough(Profile):
    """For a model no family claims: the options go exactly as written, the file as
    ``audio``, and the result is read in whichever known shape it has (Deepgram's first)."""

    def create_fields(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def unsupported(self, options: Mapping[str, Any]) -> list[str]:
        return []


def keyword_list(value: Any) -> list[str]:
    """Keywords from a YAML list or a comma-separated string."""
    raw = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [s for s in (str(v).strip() for v in raw) if s]


@functools.cache
def _warn_once(event: str, model: str, what: str = "") -> None:
    """Cached so a warning about the configuration is logged once per process, not per job."""
    log.warning(event, model=model, **({"option": what} if what else {}))


@functools.cache
def _import_families() -> None:
    """Once per process: every result read asks for the families (``Profile.parse``)."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")


def _families() -> list[type[Profile]]:
    _import_families()
    return list(Profile.registry.values())


@functools.lru_cache(maxsize=256)
def profile_for(model: str, backend: str = "aimlapi") -> Profile:
    """The profile of ``model`` on ``backend``; unknown models get the pass-through profile
    (options as written, Deepgram-shaped parsing) and one warning."""
    for cls in _families():
        if cls.backend == backend and cls.serves(model):
            return cls(model)
    _warn_once("unknown_model_passed_through", model)
    return PassThrough(model)


def profile_for_header(header: Mapping[str, Any]) -> Profile:
    """The profile named by a job header (``model``, ``backend``), as the writers get it; a
    header without a model reads the result in any known shape."""
    if not header.get("model"):
        return PassThrough("")
    return profile_for(str(header.get("model") or ""), str(header.get("backend") or "aimlapi"))


# --- helpers the family parsers share ----------------------------------------------------------

def read_words(raw: Any, keys: Iterable[str], scale: float = 1.0) -> tuple[Word, ...]:
    """Timed words; all-or-nothing, since one untimed word would turn every later cue time
    into a guess. ``scale`` turns the family's unit into seconds (0.001 for milliseconds)."""
    keys = tuple(keys)
    out = []
    for item in loose.items(raw):
        start, end = loose.number(loose.get(item, "start")), loose.number(loose.get(item, "end"))
        if start is None or end is None:
            return ()
        if word := loose.text(item, *keys):
            out.append(Word(word, start * scale, end * scale,
                            loose.number(loose.get(item, "confidence")),
                            speaker_label(loose.get(item, "speaker"))))
    return tuple(out)


def read_spans(raw: Any, keys: Iterable[str], scale: float = 1.0) -> tuple[Span, ...]:
    """Timed spans (utterances, segments, sentences); all-or-nothing like ``read_words``."""
    return tuple(Span(w.text, w.start, w.end, w.speaker) for w in read_words(raw, keys, scale))
