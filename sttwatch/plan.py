"""How a file will be transcribed and written, decided from the config when it is admitted.

The watch's overrides over the global settings; the result is frozen onto the job's row, so a
reload never changes a job already on its way (formats, model label, backend).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backends import Backend
from .config import Config
from .store import Plan


def is_url(text: str) -> bool:
    """An input that is a recording's address, not a file (``sttwatch transcribe URL``)."""
    return text.startswith(("http://", "https://"))


class Planner:
    def __init__(self, cfg: Config, backends: Mapping[str, Backend], default: str) -> None:
        self._cfg = cfg
        self._backends = backends
        self._default = default

    @property
    def default_backend(self) -> str:
        return self._default

    def plan_for(self, path: Path) -> Plan:
        cfg = self._cfg
        w = cfg.watch_for(path)
        kind = self._default
        if w is not None and w.backend is not None and w.backend in self._backends:
            kind = w.backend
        backend = self._backends[kind]
        local = not backend.takes_api_options
        options: dict[str, Any] = {} if local else dict(cfg.api.options)
        if local and cfg.local.language:
            options["language"] = cfg.local.language
        options.update(w.options or {} if w is not None else {})
        model = backend.model_name if local or w is None or w.model is None else w.model
        formats = w.formats if w is not None and w.formats is not None else cfg.output.formats
        root = w.path if w is not None else path.parent
        return Plan(kind, model, options, tuple(formats), str(root), dict(backend.shaping()))
