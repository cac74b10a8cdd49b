"""What polling a network share costs: a real SSHFS mount (a private sshd on 127.0.0.1, as in
the tests) holding N recordings that are already transcribed, watched with the default
``polling: auto``. Needs root, /dev/fuse, sshfs and openssh-server.

Prints, against the goals: start-up to idle (the daemon's CPU under 0.1 CPU-s over 10 s),
the idle daemon's CPU a minute, the server side's (sshfs + sshd) CPU a minute, and how long a
new file written on the server takes to reach the service (settle_seconds 2 included).

Run:  python bench/share_polling.py [--files 20000] [--minutes 1] [--dir-cache]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fake_service import FakeConfig, FakeService, make_fake_audio  # noqa: E402
from share import share_unavailable, sshfs_share  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--pickups", type=int, default=3)
    parser.add_argument("--dir-cache", action="store_true",
                        help="sshfs's default directory cache (20 s) instead of dir_cache=no")
    args = parser.parse_args()
    why = share_unavailable()
    if why is not None:
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="sttwatch-share-") as tmp, \
            FakeService(FakeConfig(key="k", task_seconds=0.1)) as svc, \
            sshfs_share(Path(tmp) / "share", dir_cache=args.dir_cache) as share:
        root = Path(tmp)
        made = time.monotonic()
        old = time.time() - 86400
        for i in range(args.files):
            folder = share.served / f"{i // 1000:03}"
            if i % 1000 == 0:
                folder.mkdir(parents=True)
            audio = folder / f"r{i:06}.mp3"
            audio.write_bytes(b"ID3 %d" % i)
            os.utime(audio, (old, old))
            (folder / f"r{i:06}.txt").write_text("done before\n")  # up to date: not sent
        print(f"{args.files} done recordings written on the server in "
              f"{time.monotonic() - made:.1f} s")
        cfg = {"backend": "aimlapi", "api": {"base_url": svc.base_url, "api_key_env": "K"},
               "watch": [{"path": str(share.mount)}], "state": {"path": str(root / "s.db")},
               "log": {"format": "json", "level": "info"}}
        (root / "c.yaml").write_text(yaml.safe_dump(cfg))
        sock_path = str(root / "n.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
                (root / "daemon.log").open("wb") as logf:
            sock.bind(sock_path)
            sock.setblocking(False)
            env = {**os.environ, "K": "k", "NOTIFY_SOCKET": sock_path}
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "sttwatch", "run", "--config",
                                     str(root / "c.yaml")], env=env, cwd=ROOT, stderr=logf)
            try:
                # Idle: under 0.1 CPU-s over a 10 s window, after READY.
                prev, idle_at = cpu(proc.pid), None
                while time.monotonic() - started < 3600:
                    time.sleep(10)
                    now = cpu(proc.pid)
                    if now - prev < 0.1:
                        idle_at = time.monotonic() - 10
                        break
                    prev = now
                if idle_at is None:
                    raise SystemExit("the daemon never went idle")
                startup_cpu = cpu(proc.pid)
                server = share.pids()
                d0, s0 = cpu(proc.pid), sum(cpu(p) for p in server)
                time.sleep(args.minutes * 60)
                d1, s1 = cpu(proc.pid), sum(cpu(p) for p in server)
                pickups = []
                for n in range(args.pickups):
                    before = len(svc.creates())
                    path = share.served / f"new{n}.mp3"
                    t = time.monotonic()
                    make_fake_audio(path, f"new file {n}")
                    while len(svc.creates()) == before and time.monotonic() - t < 120:
                        time.sleep(0.05)
                    pickups.append(time.monotonic() - t)
                    time.sleep(3)  # the next one lands at another point of the poll cycle
                sent = len(svc.creates())
                time.sleep(2)
                failed = (root / "daemon.log").read_text().count('"event": "failed"')
            finally:
                proc.terminate()
                proc.wait(60)
        bare = [line for line in (root / "daemon.log").read_text().splitlines()
                if line and not line.startswith("{")]
    per_min = 1 / args.minutes
    print(f"{'figure':44} {'measured':>14} {'goal':>14}")
    print(f"{'start to idle':44} {idle_at - started:12.1f} s {'measured':>14}")
    print(f"{'daemon CPU until idle':44} {startup_cpu:10.1f} CPU-s {'':>14}")
    print(f"{'idle daemon CPU a minute':44} {(d1 - d0) * per_min:10.2f} CPU-s {'< 1 CPU-s':>14}")
    print(f"{'sshfs + sshd CPU a minute':44} {(s1 - s0) * per_min:10.2f} CPU-s "
          f"{'< 1 CPU-s':>14}")
    worst = f"new file to create (worst of {len(pickups)})"
    print(f"{worst:44} {max(pickups):12.1f} s "
          f"{'< 10 s':>14}")
    print(f"creates sent: {sent} (the new files only; goal {args.pickups}); failed: {failed}; "
          f"bare text lines in the log: {len(bare)}; sshfs dir_cache "
          f"{'yes (20 s)' if args.dir_cache else 'no'}")


if __name__ == "__main__":
    main()
