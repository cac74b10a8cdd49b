"""``sttwatch status``: what the daemons are doing, read from the store.

Works while they run (WAL: a reader never blocks the writer; PostgreSQL: plain reads). What
only a running daemon knows (an auth pause, a rate-limit hold, a store outage) it writes
into the store's ``daemons`` table with its heartbeat, so this command needs no socket.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, TextIO

from .budget import report
from .config import Config
from .store import DaemonInfo, Store

STALE_AFTER = 30.0  # seconds without a heartbeat: the daemon is not running


def _alive(d: DaemonInfo, now: float) -> bool:
    if now - d.heartbeat >= STALE_AFTER:
        return False
    if d.hostname != socket.gethostname():
        return True  # another host: its heartbeat is all we can see
    try:
        os.kill(d.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather(store: Store, now: float) -> dict[str, Any]:
    oldest = store.oldest_unfinished()
    daemons = [{"host_id": d.host_id, "pid": d.pid, "hostname": d.hostname,
                "heartbeat_age_seconds": round(now - d.heartbeat, 1), **d.info}
               for d in store.daemons() if _alive(d, now)]
    built = sorted({str(b.get("backend")) for d in daemons for b in d.get("backends", [])})
    return {
        # Jobs planned for a backend no running daemon has: they wait for one that has it.
        "waiting_for_backend": store.waiting_for_backend(built) if built else {},
        "store": store.location,
        "counts": store.counts(),
        "oldest_unfinished": None if oldest is None else {
            "path": oldest.path, "state": oldest.state.value, "owner": oldest.owner,
            "age_seconds": round(now - oldest.created_at, 1), "last_error": oldest.error},
        "recent_failures": [{"path": j.path, "reason": j.error, "attempts": j.attempts}
                            for j in store.failed(10)],
        "recent_notes": [{"path": j.path, "note": j.error} for j in store.noted(10)],
        "spend": store.spend(),
        "reused": store.reused(),
        "daemons": daemons,
    }


def render(info: dict[str, Any], out: TextIO, probe_seconds: float = 30.0) -> None:
    if not info["daemons"]:
        out.write("daemon: not running\n")
    for d in info["daemons"]:
        out.write(f"daemon {d['host_id']}: running (pid {d['pid']} on {d['hostname']}), "
                  f"{d.get('status', 'starting')}\n")
        for name, path in (d.get("watch_names") or {}).items():
            out.write(f"  watch {name}: {path}\n")  # hosts may mount one share differently
        for path, note in sorted(d.get("watch_notes", {}).items()):
            out.write(f"  watch {path}: {note}\n")
        if d.get("store_unavailable"):
            out.write(f"  waiting on: the store ({d['store_unavailable']})\n")
        broke = any(b.get("out_of_credits") for b in d.get("backends", []))
        if d.get("auth_rejected") and broke:
            out.write(f"  waiting on: the account is out of credits "
                      f"({d['auth_rejected']}); probing every {probe_seconds:g} s\n")
        elif d.get("auth_rejected"):
            out.write(f"  waiting on: the service refused the API key "
                      f"({d['auth_rejected']}); probing every {probe_seconds:g} s\n")
        elif d.get("submits_held_seconds"):
            out.write(f"  waiting on: rate limit or outage, submits held "
                      f"{d['submits_held_seconds']:.0f} s more\n")
    for kind, n in sorted(info.get("waiting_for_backend", {}).items()):
        out.write(f"waiting on: {n} job(s) planned for backend {kind}, which no running "
                  f"daemon has (a host that builds {kind} takes them; a queued one is planned "
                  "again when no daemon has its backend, or with sttwatch retry)\n")
    out.write("jobs: " + "  ".join(f"{k} {v}" for k, v in info["counts"].items()) + "\n")
    oldest = info["oldest_unfinished"]
    if oldest is not None:
        out.write(f"oldest unfinished: {oldest['path']} ({oldest['state']}, "
                  f"{oldest['age_seconds']:.0f} s)"
                  + (f", last error: {oldest['last_error']}" if oldest["last_error"] else "")
                  + "\n")
    if info.get("reused"):
        out.write(f"reused: {info['reused']} recording(s) answered from an earlier result of "
                  "the same bytes (renamed, moved or copied; nothing paid)\n")
    for f in info["recent_failures"]:
        out.write(f"failed: {f['path']}: {f['reason']}\n")
    for n in info.get("recent_notes", []):
        out.write(f"done, not sent: {n['path']}: {n['note']}\n")
    if info["spend"]:
        out.write("spend: " + ", ".join(f"{k.removeprefix('x-aimlapi-')} {v:g}"
                                        for k, v in info["spend"].items()) + "\n")


def money(cfg: Config, store: Store, now: float) -> dict[str, Any]:
    """The budget (each cap, what its period spent, when it resets) and the hooks' outbox."""
    box = store.outbox()
    oldest = box.pop("oldest_created_at")
    return {"budget": report(cfg.budget, store, now),
            "hooks": {**box, "oldest_age_seconds": None if oldest is None
                      else round(now - oldest, 1)}}


def render_money(info: dict[str, Any], out: TextIO) -> None:
    budget = info["budget"]
    for name, cap in budget["caps"].items():
        held = ("new jobs go to the local engine" if budget["on_exhausted"] == "local"
                else "creates wait")
        state = (f"reached: {held} until {cap['resets_at']}" if cap["reached"]
                 else f"resets {cap['resets_at']}")
        out.write(f"budget {name}: {cap['spent']:g} of {cap['limit']:g} ({state})\n")
    hooks = info["hooks"]
    if hooks["undelivered"]:
        out.write(f"hooks: {hooks['undelivered']} event(s) undelivered, oldest "
                  f"{hooks['oldest_age_seconds']:.0f} s"
                  + (f", last error: {hooks['last_error']}" if hooks["last_error"] else "")
                  + "\n")


def status(cfg: Config, store: Store, out: TextIO, as_json: bool) -> None:
    now = time.time()
    info = gather(store, now) | money(cfg, store, now)
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
    else:
        render(info, out, cfg.api.probe_seconds)
        render_money(info, out)
