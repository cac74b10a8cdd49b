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
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from . import __version__, statecmd
from . import config as configmod
from . import log as logsetup
from .apikey import log_key_warnings, read_api_key
from .backends import kinds as backend_kinds
from .errors import BackendUnavailable, ConfigError
from .exitcodes import ExitCode, exit_code_lines
from .search import command as searchcmd
from .store import StoreError, StoreUnavailable
from .wiring import build, choose_backend, open_for_command


def _exit_statuses(*codes: ExitCode) -> str:
    return "exit statuses:\n" + "\n".join(exit_code_lines(codes or ExitCode))


def _config_option(p: argparse.ArgumentParser, required: bool = True,
                   text: str = "the config file (see config.example.yaml)") -> None:
    p.add_argument("--config", "-c", required=required, type=Path, metavar="FILE", help=text)


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="sttwatch", description="Watch folders for recordings "
                                "and write their transcripts beside them.",
                                epilog="'sttwatch COMMAND --help' shows a command's options; "
                                "'sttwatch run --help' lists the exit statuses.")
    p.add_argument("--version", action="version", version=f"sttwatch {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="one of the commands below")
    run = sub.add_parser("run", help="run the daemon in the foreground",
                         description=textwrap.fill("Watch the configured folders and "
                                                   "transcribe every new recording, until "
                                                   "SIGTERM or Ctrl-C (which exit 0).", 79),
                         epilog=_exit_statuses(), formatter_class=raw)
    _config_option(run)
    run.add_argument("--once", action="store_true", help="process what is there and every "
                     "pending job, then exit with one of the statuses below (for cron)")
    run.add_argument("--backend", choices=backend_kinds(),
                     help="use this backend instead of the config's 'backend'")
    tr = sub.add_parser("transcribe", help="transcribe files or URLs once and print them",
                        description=textwrap.fill("Transcribe recordings (or http(s) URLs) "
                                                  "one at a time and print the transcripts; "
                                                  "no state file, no daemon.", 79),
                        epilog=_exit_statuses(ExitCode.OK, ExitCode.FAILED, ExitCode.CONFIG,
                                              ExitCode.AUTH, ExitCode.INTERRUPTED),
                        formatter_class=raw)
    tr.add_argument("inputs", nargs="+", metavar="FILE|URL",
                    help="recordings to transcribe, or http(s) URLs of recordings")
    _config_option(tr, required=False, text="a config file for the service and engine "
                   "settings (default: every key at its default)")
    tr.add_argument("--backend", choices=backend_kinds(),
                    help="use this backend instead of the config's 'backend' (default: auto, "
                    "the AI/ML API when a key is set)")
    tr.add_argument("--format", "-f", default="txt", choices=configmod.FORMAT_KINDS,
                    help="what to print (default: txt)")
    ck = sub.add_parser("check", help="check the config, folders, limits and the API key",
                        description="Check everything 'run' needs and print each problem with "
                        "its fix; exit 0 only when all is well.")
    _config_option(ck)
    for name, text in (("status", "show what the daemon is doing"),
                       ("retry", "queue failed files again"),
                       ("forget", "drop files from the state file")):
        sp = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] +
                            " (works while the daemon runs).")
        _config_option(sp)
        if name == "status":
            sp.add_argument("--json", action="store_true",
                            help="print one JSON object instead of text")
        else:
            sp.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                            help="recordings to " + ("queue again" if name == "retry" else
                                                     "drop from the state file"))
        if name == "retry":
            sp.add_argument("--failed", action="store_true", help="every failed file")
            sp.add_argument("--render", action="store_true",
                            help="write the transcripts again from the results already paid "
                            "for (files failed with 'cannot render'), without a new create")
            sp.add_argument("--keep-plan", action="store_true",
                            help="keep the backend, model and options the file was queued "
                            "with (default: the running daemon plans it again with today's "
                            "config)")
    statecmd.add_parser(sub)
    searchcmd.add_parser(sub)
    cf = sub.add_parser("config", help="print the example config or its reference",
                        description="Print the commented example config (every key at its "
                        "default) or the reference of every key, both made from the schema.")
    what = cf.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", action="store_true",
                      help="print a commented example config (YAML)")
    what.add_argument("--docs", action="store_true",
                      help="print the reference of every key (Markdown)")
    return p


def _say_on_tty(err: TextIO) -> Callable[[str], None]:
    """Words for a person at a terminal; the journal gets the structured events only."""

    def say(text: str) -> None:
        if err.isatty():
            err.write(text)
            err.flush()

    return say


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO,
            environ: Mapping[str, str]) -> int:
    cfg = configmod.load(args.config)
    key = read_api_key(cfg, environ)
    logsetup.setup(cfg.log_level, cfg.log_format, err, secrets=[key] if key else [])
    log_key_warnings(cfg)
    daemon = build(cfg, key=key, override=args.backend, environ=environ, say=_say_on_tty(err))
    handlers = {signal.SIGTERM: lambda *_: daemon.request_stop(),
                signal.SIGINT: lambda *_: daemon.request_stop(),
                signal.SIGHUP: lambda *_: daemon.request_reload()}
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
    cfg = configmod.load(args.config)
    store = open_for_command(cfg)
    try:
        status(cfg, store, out, args.json)
    finally:
        store.close()
    return ExitCode.OK


def _edit(args: argparse.Namespace, out: TextIO, err: TextIO, verb: str) -> int:
    cfg = configmod.load(args.config)
    paths = [str(p.resolve()) for p in args.paths]
    render = getattr(args, "render", False)
    if not paths and not getattr(args, "failed", False) and not render:
        err.write(f"sttwatch {verb}: name files, or --failed\n" if verb == "retry" else
                  f"sttwatch {verb}: name the files to forget\n")
        return ExitCode.CONFIG
    store = open_for_command(cfg)
    try:
        if verb == "retry" and render:
            n = store.rerender(time.time(), paths or None)
        elif verb == "retry":
            n = store.retry(time.time(), paths or None,
                            keep_plan=getattr(args, "keep_plan", False))
        else:
            n = store.forget(paths)
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


def cmd_config(args: argparse.Namespace, out: TextIO, err: TextIO,
               environ: Mapping[str, str]) -> int:
    from .configdoc import configuration_md, example_yaml
    out.write(example_yaml() if args.example else configuration_md())
    return ExitCode.OK


def cmd_state(args: argparse.Namespace, out: TextIO, err: TextIO,
              environ: Mapping[str, str]) -> int:
    return statecmd.cmd_state(args, out, err)


def cmd_search(args: argparse.Namespace, out: TextIO, err: TextIO,
               environ: Mapping[str, str]) -> int:
    return searchcmd.cmd_search(args, out, err)


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO, Mapping[str, str]], int]] = {
    "run": cmd_run, "status": cmd_status, "retry": cmd_retry, "forget": cmd_forget,
    "transcribe": cmd_transcribe, "check": cmd_check, "config": cmd_config,
    "state": cmd_state, "search": cmd_search,
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
        code = COMMANDS[args.command](args, out, err, os.environ if environ is None else environ)
        out.flush()  # inside the try: a reader that went away shows up here
        return code
    except BrokenPipeError:
        # 'sttwatch status | head -1': the reader stopped early, which is not our failure.
        _silence(out)
        return ExitCode.OK
    except ConfigError as exc:
        err.write(f"sttwatch: {exc}\n")
        return ExitCode.CONFIG
    except (BackendUnavailable, StoreError, StoreUnavailable) as exc:
        err.write(f"sttwatch: {exc}\n")
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except OSError as exc:  # a watch folder that cannot be created, a state file on a full disk
        err.write(f"sttwatch: {exc.strerror or exc}: {exc.filename or ''}\n")
        return ExitCode.FAILED


def _silence(stream: TextIO) -> None:
    """Point a closed stdout at /dev/null, so the interpreter's final flush cannot raise
    BrokenPipeError again and print a traceback (the recipe in Python's signal docs)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO in tests: nothing to silence
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
