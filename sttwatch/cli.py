"""``sttwatch`` command line: each command is one function returning an exit status.

``main`` never calls ``sys.exit``; the typed errors become one message and one status here,
the only place they are caught for the CLI. Config errors are printed before logging is set
up, so a broken file is reported plainly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from . import __version__
from . import config as configmod
from . import log as logsetup
from .errors import BackendUnavailable, ConfigError
from .exitcodes import ExitCode
from .store import Store
from .wiring import build, choose_backend, read_api_key


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sttwatch", description="Watch folders for recordings "
                                "and write their transcripts beside them.")
    p.add_argument("--version", action="version", version=f"sttwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", "-c", required=True, type=Path)
    run.add_argument("--once", action="store_true", help="process what is there, then exit "
                     "(0: all done, 1: some failed, 3: the service refused the key)")
    run.add_argument("--backend", choices=("aimlapi", "local"))
    tr = sub.add_parser("transcribe", help="transcribe files or URLs once and print them")
    tr.add_argument("inputs", nargs="+", metavar="FILE|URL")
    tr.add_argument("--config", "-c", type=Path)
    tr.add_argument("--backend", choices=("aimlapi", "local"))
    tr.add_argument("--format", "-f", default="txt", choices=configmod.FORMAT_KINDS)
    ck = sub.add_parser("check", help="check the config, folders, limits and the API key")
    ck.add_argument("--config", "-c", required=True, type=Path)
    for name, text in (("status", "show what the daemon is doing"),
                       ("retry", "queue failed files again"),
                       ("forget", "drop files from the state file")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--config", "-c", required=True, type=Path)
        if name == "status":
            sp.add_argument("--json", action="store_true")
        else:
            sp.add_argument("paths", nargs="*", type=Path)
        if name == "retry":
            sp.add_argument("--failed", action="store_true", help="every failed file")
    return p


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO,
            environ: Mapping[str, str]) -> int:
    cfg = configmod.load(args.config)
    key = read_api_key(cfg, environ)
    logsetup.setup(cfg.log_level, cfg.log_format, err, secrets=[key] if key else [])
    kind = choose_backend(cfg, key, args.backend)
    daemon = build(cfg, key=key, backend_kind=kind, environ=environ)
    stop = daemon.stop_requested
    handlers = {signal.SIGTERM: lambda *_: stop.set(), signal.SIGINT: lambda *_: stop.set(),
                signal.SIGHUP: lambda *_: daemon.reload_requested.set()}
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        code = daemon.run(once=args.once)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    return code


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO,
               environ: Mapping[str, str]) -> int:
    from .status import status
    status(configmod.load(args.config), out, args.json)
    return ExitCode.OK


def _edit(args: argparse.Namespace, out: TextIO, err: TextIO, verb: str) -> int:
    cfg = configmod.load(args.config)
    paths = [str(p.resolve()) for p in args.paths]
    if not paths and not getattr(args, "failed", False):
        err.write(f"sttwatch {verb}: name files, or --failed\n" if verb == "retry" else
                  f"sttwatch {verb}: name the files to forget\n")
        return ExitCode.CONFIG
    store = Store(cfg.state_path)
    try:
        n = (store.retry(time.time(), paths or None) if verb == "retry"
             else store.forget(paths))
    finally:
        store.close()
    out.write(f"{verb}: {n} file(s)\n")
    return ExitCode.OK if n or not paths else ExitCode.FAILED


def cmd_retry(args: argparse.Namespace, out: TextIO, err: TextIO,
              environ: Mapping[str, str]) -> int:
    return _edit(args, out, err, "retry")


def cmd_forget(args: argparse.Namespace, out: TextIO, err: TextIO,
               environ: Mapping[str, str]) -> int:
    return _edit(args, out, err, "forget")


def cmd_transcribe(args: argparse.Namespace, out: TextIO, err: TextIO,
                   environ: Mapping[str, str]) -> int:
    from .transcribe import transcribe_all
    cfg = (configmod.load(args.config) if args.config
           else configmod.parse("{}", Path.cwd() / "(defaults)"))
    key = read_api_key(cfg, environ)
    logsetup.setup("warning", cfg.log_format, err, secrets=[key] if key else [])
    kind = choose_backend(cfg, key, args.backend)
    return transcribe_all(cfg, kind, key, args.inputs, args.format, out, err)


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO,
              environ: Mapping[str, str]) -> int:
    from .check import check
    return check(configmod.load(args.config), environ, out)


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO, Mapping[str, str]], int]] = {
    "run": cmd_run, "status": cmd_status, "retry": cmd_retry, "forget": cmd_forget,
    "transcribe": cmd_transcribe, "check": cmd_check,
}


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args, out, err, os.environ if environ is None else environ)
    except ConfigError as exc:
        err.write(f"sttwatch: {exc}\n")
        return ExitCode.CONFIG
    except BackendUnavailable as exc:
        err.write(f"sttwatch: {exc}\n")
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except OSError as exc:  # a watch folder that cannot be created, a state file on a full disk
        err.write(f"sttwatch: {exc.strerror or exc}: {exc.filename or ''}\n")
        return ExitCode.FAILED
