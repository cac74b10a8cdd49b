"""The systemd notify protocol, spoken to a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sttwatch.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def test_send_delivers_one_datagram_of_key_value_lines(
        listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.send(ready=1, status="x")
    assert sock.recv(4096) == b"READY=1\nSTATUS=x"
    assert notifier.send(watchdog=1)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket_written_with_an_at_sign() -> None:
    name = f"sttwatch-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(stopping=1)
        assert sock.recv(4096) == b"STOPPING=1"


def test_outside_systemd_every_send_is_a_no_op(tmp_path: Path) -> None:
    quiet = Notifier({})
    assert not quiet.enabled and quiet.send(ready=1) is False
    assert quiet.watchdog_interval is None
    # A socket that has gone away is reported, not raised.
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).send(ready=1) is False


@pytest.mark.parametrize(("usec", "interval"), [
    ("4000000", 2.0), ("1000000", 0.5), ("0", None), ("", None), ("soon", None), ("-5", None)])
def test_watchdog_interval_is_half_the_systemd_timeout(usec: str, interval: float | None) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval == interval


def test_a_reader_that_stalls_never_blocks_the_sender(
        listener: tuple[socket.socket, str]) -> None:
    _sock, path = listener  # bound, never read: the kernel's queue fills after a few
    notifier = Notifier({"NOTIFY_SOCKET": path})
    sent = [notifier.send(watchdog=1, status=f"beat {i}") for i in range(200)]
    assert sent[0] and not all(sent)  # the first went; later ones were dropped, not waited on
