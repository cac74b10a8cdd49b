"""The systemd notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

No dependency needed; outside systemd (no socket in the environment) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'.
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; False when there is no socket or it is gone."""
        if not self._addr:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._addr)
                # Never block the main loop on a reader that stalls: the kernel queues only
                # a few datagrams (net.unix.max_dgram_qlen); a full queue drops this one.
                sock.send(msg, socket.MSG_DONTWAIT)
        except OSError:
            return False
        return True
