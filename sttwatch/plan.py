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


def language_conflict(local_model: str, language: object) -> str | None:
    """Said rather than guessed: a language other than English asked of an English-only
    local model (``*.en``) would be transcribed as English without a word."""
    lang = str(language or "en").lower()
    if not local_model.endswith(".en") or lang in ("en", "english") or lang.startswith("en-"):
        return None
    return (f"language {lang!r} asked for, but the local model {local_model} only knows "
            "English (set local.model to a multilingual one such as tiny, or send this "
            "folder to the AI/ML API with backend: aimlapi)")


class Planner:
    def __init__(self, cfg: Config, backends: Mapping[str, Backend], default: str) -> None:
        self._cfg = cfg
        self._backends = backends
        self._default = default

    @property
    def default_backend(self) -> str:
        return self._default

    @property
    def kinds(self) -> list[str]:
        """The backends this run built: the only plans it can carry out."""
        return list(self._backends)

    def conflict(self, plan: Plan) -> str | None:
        """Why ``plan`` cannot be carried out as asked (see ``language_conflict``)."""
        backend = self._backends.get(plan.backend)
        if backend is None or backend.takes_api_options:
            return None
        return language_conflict(backend.model_name, plan.options.get("language"))

    def conflicts(self) -> list[tuple[str, str]]:
        """(folder, reason) for every watch whose plan cannot be carried out."""
        found = []
        for w in self._cfg.watches:
            reason = self.conflict(self.plan_for(w.path / "probe"))
            if reason is not None:
                found.append((str(w.path), reason))
        return found

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
