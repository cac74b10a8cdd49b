"""The settings the pipeline runs with, resolved from the config by ``wiring``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JobSettings:
    """What a job is created with; per-watch overrides arrive through ``settings_for``."""

    backend: str
    model: str
    options: Mapping[str, Any]
    formats: tuple[str, ...]
    root: Path  # the watched folder the file belongs to (for mirrored output trees)


@dataclass(frozen=True)
class PipelineSettings:
    max_in_flight: int = 16
    first_poll: float = 1.0
    poll_cap: float = 20.0
    job_timeout: float = 3600.0
    max_attempts: int = 3
    poll_workers: int = 4
