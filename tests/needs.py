"""What a test needs from the machine: skipped where it is missing, failed under ``CI``.

CI runs as root on a machine whose ``.ci/run`` installs every part (PostgreSQL, sshfs, sshd,
unshare), so a part missing there is a broken set-up, not a reason to test less: a CI run
that silently skipped the share or the second store would prove nothing about them.
"""

from __future__ import annotations

import os

import pytest


def require(why_not: str | None, what: str) -> None:
    """``why_not``: None when the part is there, else why it is not. ``what`` names the tests
    for the failure message."""
    if why_not is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} cannot run under CI: {why_not}")
    pytest.skip(why_not)
