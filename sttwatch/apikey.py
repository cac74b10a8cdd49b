"""The API key: read from a file (a systemd credential) or an environment variable, checked
for characters an HTTP header cannot carry, and never shown."""

from __future__ import annotations

from collections.abc import Mapping

from .config import Config
from .errors import ConfigError


def read_api_key(cfg: Config, environ: Mapping[str, str]) -> str | None:
    """The key from ``api.api_key_file`` (a systemd credential) or ``api.api_key_env``."""
    api = cfg.api
    if api.api_key_file is not None:
        try:
            key = api.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(cfg.source, [f"at 'api.api_key_file': cannot read "
                                           f"{api.api_key_file}: {exc.strerror}"]) from None
        except UnicodeDecodeError:
            raise ConfigError(cfg.source, [f"at 'api.api_key_file': {api.api_key_file} "
                                           "is not text"]) from None
        if not key:
            raise ConfigError(cfg.source, [f"at 'api.api_key_file': {api.api_key_file} "
                                           "is empty"])
    elif api.api_key_env:
        key = environ.get(api.api_key_env, "").strip()
        if not key:
            return None
    else:
        return None
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        where = "api.api_key_file" if api.api_key_file is not None else "api.api_key_env"
        raise ConfigError(cfg.source, [f"at '{where}': the API key holds characters that "
                                       "cannot be sent in an HTTP header (spaces, invisible "
                                       "or non-ASCII characters pasted with it?)"])
    return key
