"""Admission of a large first scan: N new files (default 100,000) already in the folder when
the daemon starts, against the fake service (tasks that never finish, so only admission is
measured). Prints the admission rate and the longest gap between systemd watchdog pings seen
on a stand-in notify socket, against the goals: every file admitted at a steady rate, no gap
near ``WATCHDOG_USEC`` (systemd's kill threshold; the daemon pings at half of it), and the
first create before the last file is admitted (sending starts with the first batch).

Run:  python bench/admission.py [--files 100000] [--watchdog-usec 30000000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fake_service import FakeConfig, FakeService  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--watchdog-usec", type=int, default=30_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sttwatch-admission-") as tmp, \
            FakeService(FakeConfig(key="k", task_seconds=3600)) as svc:
        root = Path(tmp)
        inbox = root / "inbox"
        made = time.monotonic()
        for i in range(args.files):
            folder = inbox / f"{i // 1000:03}"
            if i % 1000 == 0:
                folder.mkdir(parents=True)
            (folder / f"r{i:06}.mp3").write_bytes(b"ID3 %d" % i)
        print(f"{args.files} files written in {time.monotonic() - made:.1f} s")
        cfg = {"backend": "aimlapi",
               "api": {"base_url": svc.base_url, "api_key_env": "K", "max_in_flight": 4},
               "watch": [{"path": str(inbox)}], "state": {"path": str(root / "s.db")},
               "log": {"format": "json", "level": "warning"}}
        (root / "c.yaml").write_text(yaml.safe_dump(cfg))
        sock_path = str(root / "n.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(sock_path)
            sock.settimeout(0.2)
            env = {**os.environ, "K": "k", "NOTIFY_SOCKET": sock_path,
                   "WATCHDOG_USEC": str(args.watchdog_usec)}
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "sttwatch", "run", "--config",
                                     str(root / "c.yaml")], env=env, cwd=ROOT,
                                    stderr=subprocess.DEVNULL)
            pings: list[float] = []
            ready = admitted = None
            while time.monotonic() - started < 1800:
                try:
                    msg = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                now = time.monotonic()
                ready = ready or (now if "READY=1" in msg else None)
                if "WATCHDOG=1" in msg:
                    pings.append(now)
                if ready and "STATUS=" in msg and " queued, " in msg:
                    queued, rest = msg.split("STATUS=")[-1].split(" queued, ", 1)
                    if int(queued) + int(rest.split(" in flight")[0]) >= args.files:
                        admitted = now
                        break
            proc.terminate()
            _, _, usage = os.wait4(proc.pid, 0)
    if ready is None or admitted is None:
        raise SystemExit("admission did not finish")
    gaps = [b - a for a, b in itertools.pairwise(pings)] or [0.0]
    first = svc.creates()[0].time if svc.creates() else None
    limit = args.watchdog_usec / 1e6
    print(f"{'figure':44} {'measured':>14} {'goal':>22}")
    print(f"{'start to READY':44} {ready - started:12.1f} s {'':>22}")
    print(f"{'READY to all admitted':44} {admitted - ready:12.1f} s {'':>22}")
    print(f"{'admission rate':44} {args.files / (admitted - ready):10.0f} f/s {'steady':>22}")
    print(f"{'longest gap between watchdog pings':44} {max(gaps):12.2f} s "
          f"{f'< {limit:.0f} s (kill)':>22}")
    print(f"{'first create before all admitted':44} "
          f"{'yes' if first is not None and first < admitted else 'no':>14} {'yes':>22}")
    print(f"{'daemon CPU (user+sys) / peak RSS':44} "
          f"{usage.ru_utime + usage.ru_stime:8.1f} s / {usage.ru_maxrss / 1024:.0f} MB")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"(bench process peak RSS {own} MB)")


if __name__ == "__main__":
    main()
