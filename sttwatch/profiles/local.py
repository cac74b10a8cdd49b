"""The local faster-whisper engine. It builds results in Deepgram's shape itself
(sttwatch/backends/local.py) and reads its own option names, so options pass unchanged and
any model name or folder belongs here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from .deepgram import DeepgramShaped


class LocalProfile(DeepgramShaped, family="local"):
    backend: ClassVar[str] = "local"
    models: ClassVar[tuple[str, ...]] = (r".*",)
    option_names: ClassVar[Mapping[str, str]] = {"language": "language"}
