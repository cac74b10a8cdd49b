"""Waiting costs what idling costs, and every wait of ``run --once`` ends.

Real daemons against the fake service. CPU is read from /proc/PID/stat over a window of wall
time: a loop that spins burns about one CPU-second per second, a daemon that waits as it
should a few hundredths. The bound (0.3) leaves room for a shared, busy machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import KEY, Daemon, run_cli, tmpfs_at, transcript, wait_for, write_config
from fake_service import COST_HEADERS, FakeConfig, FakeService, make_fake_audio

from sttwatch.exitcodes import ExitCode
from sttwatch.store import Admission, Plan, State
from sttwatch.store.sqlite import SqliteStore

BUSY = 0.3  # CPU-seconds per second: far above waiting (~0.02), far below a spin (~1)
PER_CREATE = float(COST_HEADERS["x-aimlapi-usd-spent"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_rate(pid: int, window: float = 4.0) -> float:
    """CPU-seconds per wall second over ``window``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)  # the measurement window itself, not a wait for a condition
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


@pytest.fixture
def slow() -> Iterator[FakeService]:
    """Tasks that stay in flight for the whole measurement."""
    with FakeService(FakeConfig(key=KEY, task_seconds=120.0)) as svc:
        yield svc


@pytest.mark.solo  # CPU over a window of wall time
def test_a_full_backend_beside_an_idle_one_costs_what_idling_costs(
        tmp_path: Path, slow: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    (tmp_path / "local").mkdir()
    cfg = write_config(tmp_path, slow.base_url, api={"max_in_flight": 2},
                       watch=[{"path": "./inbox"}, {"path": "./local", "backend": "local"}])
    for i in range(6):
        make_fake_audio(tmp_path / "inbox" / f"rec{i}.mp3", f"recording {i}")
    d = daemon_factory(cfg).start()
    wait_for(lambda: len(slow.creates()) == 2, timeout=60)
    assert d.proc is not None
    rate = cpu_rate(d.proc.pid)
    print(f"two backends, one full: {rate:.3f} CPU-s/s")
    assert rate < BUSY, rate  # was 0.995: the submitter slept 0 s while the API was full
    assert len(slow.creates()) == 2
    assert d.stop() == 0


@pytest.mark.solo  # CPU over a window of wall time
def test_an_auth_pause_costs_what_idling_costs(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    cfg = write_config(tmp_path, fake.base_url, api={"probe_seconds": 30})
    d = daemon_factory(cfg, env={"STTWATCH_TEST_KEY": "sk-wrong-000000000000000000"}).start()
    for i in range(3):
        make_fake_audio(tmp_path / "inbox" / f"rec{i}.mp3", f"recording {i}")
    wait_for(lambda: any(e["event"] == "api_key_rejected" for e in d.events()), timeout=60)
    assert d.proc is not None
    rate = cpu_rate(d.proc.pid)
    print(f"auth pause: {rate:.3f} CPU-s/s")
    assert rate < BUSY, rate
    assert d.stop() == 0


def _queue_as(cfg: Path, tmp_path: Path, plan: Plan, names: list[str]) -> None:
    """Jobs as an earlier run with another config left them: queued with its plan."""
    store = SqliteStore(tmp_path / "state" / "sttwatch.db")
    try:
        offers = []
        for name in names:
            path = make_fake_audio(tmp_path / "inbox" / name, f"said in {name}")
            st = path.stat()
            offers.append(Admission(str(path), st.st_size, st.st_mtime_ns, plan,
                                    (str(path.with_suffix("")) + ".{format}",)))
        store.admit(offers, time.time())
    finally:
        store.close()


def test_jobs_queued_for_a_backend_this_run_lacks_are_planned_again_and_done(
        tmp_path: Path, fake: FakeService) -> None:
    # Queued for the local engine (no key then); now the key is set: auto means the API.
    cfg = write_config(tmp_path, fake.base_url, backend="auto")
    inbox = tmp_path / "inbox"
    _queue_as(cfg, tmp_path, Plan("local", "tiny.en", {}, ("txt",), str(inbox)),
              ["a.mp3", "b.mp3", "c.mp3"])
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.OK, r.err[-2000:]
    for name in ("a", "b", "c"):
        assert transcript(inbox / f"{name}.mp3") == f"said in {name}.mp3"
    assert sum(e["event"] == "replanned" for e in r.events()) == 3


def test_retry_plans_again_unless_told_to_keep_the_plan(tmp_path: Path,
                                                        fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    inbox = tmp_path / "inbox"
    _queue_as(cfg, tmp_path, Plan("aimlapi", "old-model", {}, ("txt",), str(inbox)),
              ["a.mp3"])
    db = tmp_path / "state" / "sttwatch.db"
    store = SqliteStore(db)
    job = store.claim_submit("x", time.time(), 60.0, ["aimlapi"])
    assert job is not None and store.mark_failed(job, "broken", time.time())
    store.close()
    assert run_cli("retry", "--config", str(cfg), "--keep-plan",
                   str(inbox / "a.mp3")).code == 0
    store = SqliteStore(db)
    kept = store.get(str(inbox / "a.mp3"))
    assert kept is not None and kept.plan is not None and kept.plan.model == "old-model"
    assert kept.state is State.SEEN
    store.close()
    assert run_cli("retry", "--config", str(cfg), str(inbox / "a.mp3")).code == 0
    store = SqliteStore(db)
    again = store.get(str(inbox / "a.mp3"))
    assert again is not None and again.plan is None and again.backend is None
    store.close()
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.OK, r.err[-2000:]
    assert transcript(inbox / "a.mp3") == "said in a.mp3"


def test_once_stops_at_a_budget_cap_with_exit_6_and_the_rest_wait(
        tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url, budget={"usd_per_day": PER_CREATE / 2})
    for i in range(4):
        make_fake_audio(tmp_path / "inbox" / f"rec{i}.mp3", f"recording {i}")
    started = time.monotonic()
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.BUDGET == 6, r.err[-2000:]
    assert time.monotonic() - started < 120  # not at midnight UTC
    assert any(e["event"] == "budget_held" for e in r.events())
    assert len(fake.creates()) == 1
    status = run_cli("status", "--config", str(cfg)).out
    assert "seen 3" in status and "failed 0" in status  # the rest wait for the reset


def test_once_gives_up_on_transcripts_it_cannot_write_and_keeps_the_result(
        tmp_path: Path, fake: FakeService) -> None:
    with tmpfs_at(tmp_path / "out", "4m") as out:
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        cfg = write_config(tmp_path, fake.base_url, output={"dir": str(out)},
                           daemon={"once_timeout": 2})
        make_fake_audio(tmp_path / "inbox" / "a.mp3", "kept for later")
        r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.FAILED == 1, r.err[-2000:]
    stuck = [e for e in r.events() if e["event"] == "stuck"]
    assert stuck and "cannot write transcript" in stuck[0]["reason"]
    assert "next run" in stuck[0]["action"]
    status = run_cli("status", "--config", str(cfg)).out
    assert "fetched 1" in status  # the paid result stays for the next run
    assert len(fake.creates()) == 1


def test_a_wrong_base_url_is_one_config_message_not_a_traceback_per_file(
        tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url.rstrip("/") + "/nowhere",
                       daemon={"once_timeout": 1})
    for i in range(2):
        make_fake_audio(tmp_path / "inbox" / f"rec{i}.mp3", f"recording {i}")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.UNREACHABLE, r.err[-2000:]
    said = [e for e in r.events() if e["event"] == "create_not_found"]
    assert said and "exception" not in said[0]
    assert not any(e["event"] == "create_crashed" for e in r.events())
    assert "Traceback" not in r.err
    assert "seen 2" in run_cli("status", "--config", str(cfg)).out


def test_a_task_sent_to_a_backend_this_config_lacks_is_named_and_once_ends(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path, backend="local")
    inbox = tmp_path / "inbox"
    _queue_as(cfg, tmp_path, Plan("aimlapi", "#g1_whisper-tiny", {}, ("txt",), str(inbox)),
              ["sent.mp3"])
    store = SqliteStore(tmp_path / "state" / "sttwatch.db")
    job = store.claim_submit("old-host", time.time(), 60.0, ["aimlapi"])
    assert job is not None
    assert store.set_pending(job, "gen-1", time.time(), time.time(), None) is not None
    store.close()
    checked = run_cli("check", "--config", str(cfg), env={})
    assert "1 task(s) already sent to backend aimlapi" in checked.out, checked.out
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == ExitCode.FAILED, r.err[-2000:]
    said = [e for e in r.events() if e["event"] == "waiting_for_backend"]
    assert said and said[0]["backends"] == {"aimlapi": 1}
    assert "pending 1" in run_cli("status", "--config", str(cfg)).out  # kept as it was


def test_another_language_on_the_english_only_model_is_named_by_check_and_at_start(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path, backend="local",
                       watch=[{"path": "./inbox", "options": {"language": "fr"}}])
    checked = run_cli("check", "--config", str(cfg), env={})
    assert checked.code == ExitCode.FAILED
    assert f"watch folder {tmp_path / 'inbox'}: language 'fr' asked for, but the local " \
           "model tiny.en only knows English" in checked.out, checked.out
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == ExitCode.OK, r.err[-2000:]
    (said,) = [e for e in r.events() if e["event"] == "plan_conflict"]
    assert said["path"] == str(tmp_path / "inbox") and "'fr'" in said["reason"]
