"""``sttwatch status``: what the daemon is doing, read from the state file.

Works while the daemon runs (WAL: a reader never blocks the writer). What only the running
daemon knows (an auth pause, a rate-limit hold) it writes into the state file's ``meta``
table on every heartbeat, so this command needs no socket to ask it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO

from .config import Config
from .store import Store

STALE_AFTER = 30.0  # seconds without a heartbeat: the daemon is not running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather(cfg: Config, now: float) -> dict[str, Any]:
    store = Store(cfg.state_path)
    try:
        oldest = store.oldest_unfinished()
        daemon = store.get_meta("daemon")
        info: dict[str, Any] = {
            "state_file": str(cfg.state_path),
            "counts": store.counts(),
            "oldest_unfinished": None if oldest is None else {
                "path": oldest.path, "state": oldest.state.value,
                "age_seconds": round(now - oldest.created_at, 1), "last_error": oldest.error},
            "recent_failures": [{"path": j.path, "reason": j.error, "attempts": j.attempts}
                                for j in store.failed(10)],
            "spend": store.spend(),
        }
    finally:
        store.close()
    running = bool(daemon) and now - float(daemon["heartbeat"]) < STALE_AFTER and _alive(
        int(daemon["pid"]))
    info["daemon"] = {"running": running, **(daemon or {})} if running else {"running": False}
    return info


def render(info: dict[str, Any], out: TextIO) -> None:
    d = info["daemon"]
    if d["running"]:
        out.write(f"daemon: running (pid {d['pid']}), {d['status']}\n")
        if d.get("auth_rejected"):
            out.write(f"waiting on: the service refused the API key ({d['auth_rejected']}); "
                      f"next try in {d['submits_held_seconds']:.0f} s\n")
        elif d.get("submits_held_seconds"):
            out.write(f"waiting on: rate limit or outage, submits held "
                      f"{d['submits_held_seconds']:.0f} s more (in-flight limit "
                      f"{d['in_flight_limit']} of {d['max_in_flight']})\n")
    else:
        out.write("daemon: not running\n")
    out.write("jobs: " + "  ".join(f"{k} {v}" for k, v in info["counts"].items()) + "\n")
    oldest = info["oldest_unfinished"]
    if oldest is not None:
        out.write(f"oldest unfinished: {oldest['path']} ({oldest['state']}, "
                  f"{oldest['age_seconds']:.0f} s)"
                  + (f", last error: {oldest['last_error']}" if oldest["last_error"] else "")
                  + "\n")
    for f in info["recent_failures"]:
        out.write(f"failed: {f['path']}: {f['reason']}\n")
    if info["spend"]:
        out.write("spend: " + ", ".join(f"{k.removeprefix('x-aimlapi-')} {v:g}"
                                        for k, v in info["spend"].items()) + "\n")


def status(cfg: Config, out: TextIO, as_json: bool) -> None:
    info = gather(cfg, time.time())
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
    else:
        render(info, out)
