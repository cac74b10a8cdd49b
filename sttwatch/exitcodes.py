"""What ``sttwatch`` exits with, each status with the sentence a user reads about it.

The descriptions are the single source of the list in ``sttwatch run --help`` and in
docs/operations.md (a test compares the two), so cron jobs and the systemd unit's
``RestartPreventExitStatus=`` can rely on what is written there.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of every command; ``description`` says when each one is used."""

    description: str

    def __new__(cls, value: int, description: str = "") -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    OK = 0, "all done (run --once: every file transcribed)"
    FAILED = 1, "some files failed (their reasons are logged and in 'sttwatch status')"
    CONFIG = 2, ("cannot start: a bad config, a missing backend, or another daemon holds "
                 "the state file")
    AUTH = 3, "the service refused the API key (run --once, transcribe; the daemon waits)"
    CREDITS = 4, "the account is out of credits (run --once; the daemon waits)"
    UNREACHABLE = 5, "run --once: the service stayed unreachable for daemon.once_timeout"
    BUDGET = 6, "run --once: stopped at a budget cap; the rest waits for the reset"
    INTERRUPTED = 130, ("interrupted by Ctrl-C while starting or transcribing (a running daemon "
                        "stopped by Ctrl-C or SIGTERM exits 0)")


def exit_code_lines(codes: Iterable[ExitCode] = ExitCode, width: int = 79) -> list[str]:
    """``  N  description`` per status, wrapped under its description, for ``run --help``."""
    lines = []
    for code in codes:
        lines += textwrap.wrap(code.description, width, initial_indent=f"  {int(code):>3}  ",
                               subsequent_indent=" " * 7, break_on_hyphens=False)
    return lines


def exit_code_table() -> str:
    """The same list as a Markdown table, for the docs."""
    rows = [f"| {int(code)} | `{code.name}` | {code.description} |" for code in ExitCode]
    return "\n".join(["| status | name | when |", "| --- | --- | --- |", *rows]) + "\n"
