"""``sttwatch transcribe``: the provider's example turned into a command.

Each input is created and polled on the same backend the daemon would use, with the same
poll schedule, and printed in the chosen format. No state file: this is a one-off.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .backends import Backend, Request, TaskState
from .config import Config
from .errors import AuthError, ExpiredError, PermanentError, TransientError
from .exitcodes import ExitCode
from .outputs import get_format
from .plan import Planner
from .schedule import PollSchedule
from .wiring import build_backend


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _progress(err: TextIO, label: str) -> tuple[object, object]:
    """A one-line progress display on a TTY; silent otherwise."""
    tty = err.isatty()

    def show(_gen: str, fraction: float) -> None:
        if tty:
            err.write(f"\r{label}: {fraction:4.0%}")
            err.flush()

    def done() -> None:
        if tty:
            err.write("\r" + " " * (len(label) + 7) + "\r")
            err.flush()

    return show, done


def transcribe_one(backend: Backend, request: Request, schedule: PollSchedule,
                   err: TextIO, label: str) -> dict[str, object]:
    finished = threading.Event()  # the local engine says when; the service cannot
    backend.set_listener(lambda _gen: finished.set())
    created = backend.create(request)
    started = time.monotonic()
    delay = schedule.first_delay()
    tty = err.isatty()
    while True:
        finished.wait(delay)
        finished.clear()
        status = backend.fetch(created.generation_id)
        age = time.monotonic() - started
        if status.state is TaskState.DONE:
            assert status.result is not None
            return {"generation_id": created.generation_id, "result": status.result,
                    "cost": created.cost}
        if status.state is TaskState.FAILED:
            # Worded as the daemon's poller words it: only the service's failure is blamed
            # on the service; the local engine's reason is the decoder's.
            raise PermanentError(f"the service failed the task: {status.error}"
                                 if backend.durable_ids else
                                 f"cannot transcribe: {status.error}")
        if tty and backend.kind != "local":
            err.write(f"\r{label}: {status.raw_status} {age:.0f} s")
            err.flush()
        delay = schedule.next_delay(age)


def transcribe_all(cfg: Config, kind: str, key: str | None, inputs: Sequence[str], fmt: str,
                   out: TextIO, err: TextIO) -> int:
    # One file at a time here: a single worker with every core beats idle extra workers.
    cfg = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, workers=1))
    backend = build_backend(cfg, kind, key)
    planner = Planner(cfg, {kind: backend}, kind)
    schedule = PollSchedule(cfg.daemon.first_poll_seconds, cfg.daemon.poll_cap_seconds, [])
    writer = get_format(fmt)
    code = ExitCode.OK
    try:
        for n, item in enumerate(inputs, 1):
            url = item if _is_url(item) else None
            path = None if url else Path(item).resolve()
            js = planner.plan_for(path or Path.cwd())
            show, done = _progress(err, Path(item).name)
            if hasattr(backend, "set_progress"):
                backend.set_progress(show)
            try:
                if path is not None and path.is_dir():
                    raise PermanentError("is a folder; name the recordings in it (e.g. "
                                         f"{item.rstrip('/')}/*.mp3), or watch it with "
                                         "'sttwatch run'")
                if path is not None and not path.is_file():
                    raise PermanentError("no such file")
                got = transcribe_one(backend, Request(n, js.model, path=path, url=url,
                                                      options=js.options),
                                     schedule, err, Path(item).name)
            except AuthError as exc:
                err.write(f"sttwatch: the service refused the API key: {exc}\n")
                return ExitCode.AUTH
            except (PermanentError, TransientError, ExpiredError, OSError) as exc:
                done()  # type: ignore[operator]
                err.write(f"sttwatch: {item}: {exc}\n")
                code = ExitCode.FAILED
                continue
            done()  # type: ignore[operator]
            result = got["result"]
            assert isinstance(result, dict)
            header = {"source": url or str(path), "backend": backend.kind, "model": js.model,
                      "generation_id": got["generation_id"], "cost": got["cost"]}
            if len(inputs) > 1 and fmt == "txt":
                out.write(f"== {item}\n")
            out.write(writer.render(result, header))
            out.flush()
    finally:
        backend.close()
    return code
