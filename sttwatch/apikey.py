"""The API key: where it is read from, what a config must not do with it, and how it is
kept out of any text that came back from the service.

The key reaches the program from one place (``read_api_key``) and would leave it through
service answers that quote the request (gateways and proxies echo the ``Authorization``
header in their error pages): ``redact`` is applied where those answers enter, in
``backends/aimlapi.py``, so no exception, stored error, sidecar or ``status`` line can carry it.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from .config import Config
from .errors import ConfigError

MASK = "***"
# RFC 6750 token68 characters; ``\/`` is a slash as JSON may escape it. A backslash alone is
# not taken, so a JSON string's escaped quote is never eaten and the body still parses.
# Transcripts pass through here too, so a token must look like one: 16 characters or more
# with a digit or an inner punctuation mark ("the bearer instruments." stays as spoken).
_TOKEN = r"(?:[A-Za-z0-9._~+=-]|\\?/)"
_BEARER = re.compile(rf"(?i)\b(bearer)(\s+)(?={_TOKEN}*?(?:[0-9]|[._~+=/-]{_TOKEN}))"
                     rf"{_TOKEN}{{16,}}")
# Environment variable names by convention; a value outside it may still be a name.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_ANY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def redact(text: str, key: str | None) -> str:
    """``text`` without the key (plain or JSON-escaped) and without any ``Bearer`` token."""
    if key:
        for form in {key, key.replace("/", "\\/")}:
            text = text.replace(form, MASK)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def looks_like_a_key(name: str) -> bool:
    """Whether an ``api_key_env`` value is a pasted key rather than a variable's name."""
    if not _ANY_NAME.fullmatch(name) or name.startswith(("sk-", "sk_")):
        return True  # no variable can be called that (dashes, dots, slashes, '=')
    if _ENV_NAME.fullmatch(name):
        return False
    # Lower-case names are legal; a long one mixing letters and digits is a token.
    return len(name) >= 20 and sum(c.isdigit() for c in name) >= 4


def key_source(cfg: Config) -> str:
    """Where the key is read from, for messages: never the value of a key-like
    ``api_key_env`` (printing it would print the key)."""
    api = cfg.api
    if api.api_key_file is not None:
        return f"the file {api.api_key_file}"
    if api.api_key_env and looks_like_a_key(api.api_key_env):
        return "api.api_key_env (its value looks like a key, so it is not shown)"
    return f"the environment variable {api.api_key_env}"


def read_api_key(cfg: Config, environ: Mapping[str, str]) -> str | None:
    """The key from ``api.api_key_file`` (a systemd credential) or ``api.api_key_env``."""
    api = cfg.api
    if api.api_key_env and looks_like_a_key(api.api_key_env):
        # The value itself is never shown: it may be the key.
        raise ConfigError(cfg.source, [
            "at 'api.api_key_env': the value looks like an API key, not the name of an "
            "environment variable; name the variable here (e.g. AIMLAPI_KEY) and put the key "
            "in the environment or in api.api_key_file (if it was the key, rotate it: the "
            "config file is not a secret)"])
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


@dataclass(frozen=True)
class KeyWarning:
    """Something about how the key is kept that works but should not stay so."""

    event: str
    path: str
    mode: str
    fix: str


def key_warnings(cfg: Config) -> list[KeyWarning]:
    """A key file that group or others can read (a systemd credential is 0400 to root)."""
    path = cfg.api.api_key_file
    if path is None:
        return []
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except OSError:
        return []  # read_api_key says why it cannot be read
    if mode & 0o044:
        return [KeyWarning("api_key_file_readable", str(path), f"{mode:04o}",
                           f"chmod 600 {path} (or use a systemd credential)")]
    return []


def log_key_warnings(cfg: Config) -> list[KeyWarning]:
    """Log each of ``key_warnings`` once logging is set up; returns them for ``check``."""
    warnings = key_warnings(cfg)
    log = structlog.get_logger("sttwatch.apikey")
    for w in warnings:
        log.warning(w.event, path=w.path, mode=w.mode, fix=w.fix)
    return warnings
