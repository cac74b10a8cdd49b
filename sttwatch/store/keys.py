"""Jobs in a shared store are keyed by watch name and the path within the watch, not by the
absolute path: hosts that mount one share at different places (``/srv/rec`` here,
``/mnt/nas/rec`` there) then share one library, one row per recording and one owner per
output name. Each host turns keys into its own paths at the store's edge, so every stage
keeps working with real local paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "watch:"


@dataclass(frozen=True)
class WatchKeys:
    """(watch name, this host's absolute folder) pairs; the deepest folder wins."""

    roots: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> WatchKeys:
        return cls(tuple(sorted(((n, r.rstrip("/") or "/") for n, r in pairs),
                                key=lambda p: -len(p[1]))))

    def to_key(self, path: str) -> str:
        """A local path as the store keeps it; a path outside every watch stays as it is."""
        for name, root in self.roots:
            if path == root:
                return f"{PREFIX}{name}"
            if path.startswith(root + "/"):
                return f"{PREFIX}{name}/{path[len(root) + 1:]}"
        return path

    def to_local(self, key: str) -> str:
        """A stored key as this host's path (a watch this host does not have stays a key)."""
        if not key.startswith(PREFIX):
            return key
        name, sep, rel = key[len(PREFIX):].partition("/")
        for known, root in self.roots:
            if known == name:
                return f"{root.rstrip('/')}/{rel}" if sep else root
        return key

    def prefix(self, name: str) -> str:
        return f"{PREFIX}{name}/"
