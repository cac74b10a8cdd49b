"""``sttwatch state check|reset``: what to do when the state file is the problem.

``check`` says whether the store is sound (SQLite: a read-only ``integrity_check``;
PostgreSQL: it opens, and its schema version). ``reset`` sets a damaged SQLite file aside as
``NAME.broken-<UTC time>`` (never deletes it) so the next start makes a new one; a sound file
is only set aside with ``--force``, because its pending jobs would be created (and paid) again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from . import config as configmod
from .exitcodes import ExitCode
from .store.health import Health, check_postgres, check_sqlite, set_aside

AFTER_RESET = ("the next start makes a new state file and rescans the watched folders; "
               "recordings whose transcripts exist are not sent again")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("state", help="check the state file, or set a damaged one aside",
                        description="check: is the state file (or PostgreSQL store) sound? "
                        "reset: move a damaged state file aside to NAME.broken-<UTC time> "
                        "(never deleted) so the next start makes a new one.")
    sp.add_argument("action", choices=("check", "reset"), help="what to do")
    sp.add_argument("--config", "-c", required=True, type=Path, metavar="FILE",
                    help="the config file (see config.example.yaml)")
    sp.add_argument("--force", action="store_true",
                    help="reset: set the file aside even when it is sound (its queued and "
                    "pending jobs start again from the folders; pending ones cost a create)")


def _report(health: Health, out: TextIO) -> None:
    extra = []
    if health.schema_version is not None:
        extra.append(f"schema version {health.schema_version}")
    if health.jobs is not None:
        extra.append(f"{health.jobs} jobs")
    out.write(f"{health.location}: {'sound' if health.sound else 'DAMAGED'}"
              + (f" ({', '.join(extra)})" if extra else "") + "\n")
    for line in health.findings:
        out.write(f"  {line}\n")


def cmd_state(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cfg = configmod.load(args.config)
    if cfg.state_url:
        if args.action == "reset":
            err.write("sttwatch: a shared PostgreSQL store is not reset by sttwatch; "
                      "'state check' tells whether it is sound\n")
            return ExitCode.CONFIG
        health = check_postgres(cfg.state_url)
        _report(health, out)
        return ExitCode.OK if health.sound else ExitCode.CONFIG
    path = cfg.state_path
    health = check_sqlite(path)
    if args.action == "check":
        _report(health, out)
        if not health.sound:
            out.write(f"way out: sttwatch state reset --config {args.config} (moves it aside "
                      f"to {path.name}.broken-<UTC time>); {AFTER_RESET}\n")
        return ExitCode.OK if health.sound else ExitCode.CONFIG
    if health.sound and not args.force:
        _report(health, out)
        err.write("sttwatch: the state file is sound: not reset (add --force to set it aside "
                  "anyway; its pending jobs would be created again)\n")
        return ExitCode.CONFIG
    for old, new in set_aside(path):
        out.write(f"moved {old} -> {new}\n")
    out.write(f"{AFTER_RESET}\n")
    return ExitCode.OK
