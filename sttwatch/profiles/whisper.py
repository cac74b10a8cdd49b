"""Whisper (tiny to large) as the endpoint serves it: ``#g1_whisper-*``, also named without
the ``#g1_`` prefix. Results come in Deepgram's shape; the create fields are Deepgram-style
(shared/aimlapi-stt.md). No speaker-count option, so ``speakers`` only turns on ``diarize``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .deepgram import DeepgramShaped


class WhisperProfile(DeepgramShaped, family="whisper"):
    models: ClassVar[tuple[str, ...]] = (
        r"(#g1_)?whisper-(tiny|base|small|medium|large)([\w.-]*)",)
    option_names: ClassVar[Mapping[str, str]] = {
        "language": "language", "detect_language": "detect_language", "diarize": "diarize",
        "keywords": "keywords"}
