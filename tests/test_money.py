"""Money and visibility: spend caps, out of credits vs a bad key, metrics, completion hooks.

Real daemon processes against the fake service (which answers every create with the cost
headers x-aimlapi-usd-spent 0.00105 and x-aimlapi-credits-used 2100).
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_BEAT, KEY, Daemon, run_cli, transcript, wait_for, write_config
from fake_service import COST_HEADERS, FakeService, make_fake_audio
from prometheus_client.parser import text_string_to_metric_families

from sttwatch.budget import iso, resets
from sttwatch.store import State
from sttwatch.store.sqlite import SqliteStore

PER_CREATE = float(COST_HEADERS["x-aimlapi-usd-spent"])


def status_json(cfg: Path) -> dict[str, Any]:
    out = json.loads(run_cli("status", "--config", str(cfg), "--json").out)
    assert isinstance(out, dict)
    return out


def drop(inbox: Path, n: int, prefix: str = "rec") -> dict[Path, str]:
    texts = {inbox / f"{prefix}{i:03}.mp3": f"recording number {i}" for i in range(n)}
    for path, text in texts.items():
        make_fake_audio(path, text)
    return texts


def events(d: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in d.events() if e["event"] == name]


# --- the budget --------------------------------------------------------------------------------

def test_a_daily_cap_stops_creates_and_the_rest_wait_for_the_reset(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    # Three files' worth: the third create's actual cost takes the day past the cap.
    cap = 3 * PER_CREATE - PER_CREATE / 2
    cfg = write_config(tmp_path, fake.base_url, budget={"usd_per_day": cap})
    texts = drop(tmp_path / "inbox", 6)
    d = daemon_factory(cfg).start()
    db = tmp_path / "state" / "sttwatch.db"

    def held() -> list[Any]:
        store = SqliteStore(db, create=False)
        try:
            jobs = [store.get(str(p)) for p in texts]
        finally:
            store.close()
        return [j for j in jobs if j is not None and j.state is State.SEEN
                and (j.error or "").startswith("budget usd_per_day")]

    wait_for(lambda: sum(transcript(p) is not None for p in texts) == 3
             and len(held()) == 3, timeout=60)
    assert len(fake.creates()) == 3
    day_ends = resets(held()[0].updated_at)[0]
    assert {j.next_at for j in held()} == {day_ends}  # queued until midnight UTC, not failed
    (said,) = events(d, "budget_exhausted")  # once per cap and period, not once per job
    assert said["cap"] == "usd_per_day" and said["resets_at"] == iso(day_ends)

    info = status_json(cfg)
    assert info["counts"]["seen"] == 3 and info["counts"]["failed"] == 0
    day = info["budget"]["caps"]["usd_per_day"]
    assert day["reached"] and day["limit"] == cap and day["resets_at"] == iso(day_ends)
    assert day["spent"] == pytest.approx(3 * PER_CREATE)
    text = run_cli("status", "--config", str(cfg)).out
    assert f"budget usd_per_day: {3 * PER_CREATE:g} of {cap:g} (reached: creates wait until " \
           f"{iso(day_ends)})" in text
    # The ledger is not the jobs: forgetting files does not give the money back.
    done = [str(p) for p in texts if transcript(p) is not None]
    assert run_cli("forget", "--config", str(cfg), *done).code == 0
    assert status_json(cfg)["budget"]["spent"]["usd_today"] == pytest.approx(3 * PER_CREATE)
    assert d.stop() == 0


@pytest.mark.model
def test_over_the_cap_files_go_to_the_local_engine(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    from speech import SENTENCES, speak
    cfg = write_config(tmp_path, fake.base_url, output={"formats": ["txt", "json"]},
                       budget={"usd_per_day": PER_CREATE / 2, "on_exhausted": "local"})
    inbox = tmp_path / "inbox"
    make_fake_audio(inbox / "a.mp3", "the first one is paid for")
    d = daemon_factory(cfg).start()
    wait_for(lambda: transcript(inbox / "a.mp3") is not None, timeout=120)
    speak(SENTENCES[0], inbox / "b.wav")
    wait_for(lambda: transcript(inbox / "b.wav", "json") is not None, timeout=300)
    header = json.loads((inbox / "b.json").read_text())["sttwatch"]
    assert header["backend"] == "local"
    assert json.loads((inbox / "a.json").read_text())["sttwatch"]["backend"] == "aimlapi"
    assert len(fake.creates()) == 1
    assert events(d, "sent_to_local")[0]["path"] == str(inbox / "b.wav")
    assert d.stop() == 0


# --- out of credits is not a bad key ------------------------------------------------------------

def test_out_of_credits_and_a_rejected_key_read_differently(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    assert run_cli("check", "--config", str(cfg)).out.count("accepts the key") == 1
    fake.update(out_of_credits=True)
    broke = run_cli("check", "--config", str(cfg))
    assert broke.code == 1 and "all good" not in broke.out
    assert "out of credits" in broke.out and "refused the API key" not in broke.out
    bad = run_cli("check", "--config", str(cfg),
                  env={"STTWATCH_TEST_KEY": "sk-wrong-000000000000000000"})
    assert bad.code == 1 and "refused the API key" in bad.out and "out of credits" not in bad.out

    make_fake_audio(tmp_path / "inbox" / "a.mp3", "waits for credits")
    d = daemon_factory(cfg, env=FAST_BEAT).start()
    wait_for(lambda: "out of credits" in run_cli("status", "--config", str(cfg)).out)
    text = run_cli("status", "--config", str(cfg)).out
    assert "waiting on: the account is out of credits" in text and "API key" not in text
    assert events(d, "out_of_credits") and not events(d, "api_key_rejected")
    assert d.stop() == 0

    other = daemon_factory(cfg, env={**FAST_BEAT,
                                     "STTWATCH_TEST_KEY": "sk-wrong-000000000000000000"})
    other.log = tmp_path / "bad-key.log"
    other.start()
    wait_for(lambda: "refused the API key" in run_cli("status", "--config", str(cfg)).out)
    assert "out of credits" not in run_cli("status", "--config", str(cfg)).out
    assert events(other, "api_key_rejected") and not events(other, "out_of_credits")
    assert other.stop() == 0


# --- metrics -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_agree_with_status_while_files_flow(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    fake.update(task_seconds=0.5)
    port = free_port()
    textfile = tmp_path / "textfile" / "sttwatch.prom"
    cfg = write_config(tmp_path, fake.base_url, budget={"usd_per_month": 5.0},
                       metrics={"listen": f"127.0.0.1:{port}", "textfile": str(textfile),
                                "interval": 1})
    texts = drop(tmp_path / "inbox", 12)
    d = daemon_factory(cfg).start()

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return samples(r.read().decode())

    def jobs(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
        return {dict(k[1])["state"]: v for k, v in m.items() if k[0] == "sttwatch_jobs"}

    d.wait_started()
    wait_for(lambda: 0 < len(fake.creates()) < len(texts), timeout=30)
    flowing = scrape()  # mid-run: every file is somewhere, none lost between states
    assert sum(jobs(flowing).values()) <= len(texts)
    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=60)
    wait_for(lambda: jobs(scrape()).get("done") == len(texts), timeout=10)

    m, info = scrape(), status_json(cfg)
    assert jobs(m) == {k: float(v) for k, v in info["counts"].items()}
    assert m[("sttwatch_oldest_unfinished_seconds", ())] == 0 == (info["oldest_unfinished"]
                                                                 or 0)
    assert m[("sttwatch_spend_usd", (("period", "day"),))] == pytest.approx(
        info["budget"]["spent"]["usd_today"]) == pytest.approx(len(texts) * PER_CREATE)
    assert m[("sttwatch_spend_usd", (("period", "month"),))] == pytest.approx(
        info["budget"]["caps"]["usd_per_month"]["spent"])
    creates = sum(1 for r in fake.creates() if r.status_code < 300)
    assert m[("sttwatch_requests_total", (("code", "201"), ("endpoint", "create")))] == creates
    assert m[("sttwatch_requests_total", (("code", "200"), ("endpoint", "fetch")))] >= creates
    assert m[("sttwatch_upload_bytes_total", ())] == sum(p.stat().st_size for p in texts)
    assert m[("sttwatch_audio_submitted_seconds_total", ())] > 0
    assert m[("sttwatch_pickup_latency_seconds_count", ())] == len(texts)
    assert m[("sttwatch_service_task_seconds_count", ())] == len(texts)
    assert m[("sttwatch_watch_online", (("path", str(tmp_path / "inbox")),))] == 1
    assert m[("sttwatch_hook_events_undelivered", ())] == 0

    assert d.stop() == 0  # the textfile gets the last figures as the daemon stops
    written = samples(textfile.read_text())
    assert jobs(written) == {k: float(v) for k, v in status_json(cfg)["counts"].items()}
    assert written[("sttwatch_requests_total", (("code", "201"), ("endpoint", "create")))] \
        == creates
    assert not list(textfile.parent.glob("*.tmp*"))  # written atomically: no leftovers


def test_a_metrics_port_in_use_stops_the_start(tmp_path: Path, fake: FakeService) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, fake.base_url, metrics={"listen": f"127.0.0.1:{port}"})
        r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 2 and f"metrics.listen 127.0.0.1:{port}: cannot listen" in r.err


# --- completion hooks ----------------------------------------------------------------------------

APPEND = ('printf "%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n" "$STTWATCH_EVENT_ID" "$STTWATCH_STATE" '
          '"$STTWATCH_SOURCE" "$(printf %s "$STTWATCH_TRANSCRIPTS" | tr "\\n" ,)" '
          '"$STTWATCH_REASON" "$STTWATCH_BACKEND" "$STTWATCH_COST_USD" >> "$0"')


def hook_lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split("\t") for line in log.read_text().splitlines()]


def test_a_command_hook_hears_of_every_done_and_failed_file(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    fake.update(fail_texts={"broken"})
    log = tmp_path / "hook.log"
    cfg = write_config(tmp_path, fake.base_url, output={"formats": ["txt", "srt"]},
                       hooks={"command": ["sh", "-c", APPEND, str(log)]})
    inbox = tmp_path / "inbox"
    make_fake_audio(inbox / "good.mp3", "all is well")
    make_fake_audio(inbox / "bad.mp3", "this one is broken")
    d = daemon_factory(cfg).start()
    wait_for(lambda: len(hook_lines(log)) == 2, timeout=60)
    by_source = {line[2]: line for line in hook_lines(log)}
    good, bad = by_source[str(inbox / "good.mp3")], by_source[str(inbox / "bad.mp3")]
    assert good[1] == "done" and good[3] == f"{inbox / 'good.txt'},{inbox / 'good.srt'}"
    assert good[5] == "aimlapi" and float(good[6]) == PER_CREATE and good[4] == ""
    assert bad[1] == "failed" and "broken" in bad[4] and bad[3] == ""
    assert len({good[0], bad[0]}) == 2
    wait_for(lambda: status_json(cfg)["hooks"]["undelivered"] == 0)
    assert d.stop() == 0


def test_a_hook_gets_a_clean_environment_without_the_key(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    dump = tmp_path / "hook-env.json"
    code = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    cfg = write_config(tmp_path, fake.base_url,
                       hooks={"command": [sys.executable, "-c", code, str(dump)],
                              "env": ["NOTES_TOKEN"], "timeout": 300})
    make_fake_audio(tmp_path / "inbox" / "talk.mp3", "a hook hears of this")
    d = daemon_factory(cfg, env={"NOTES_TOKEN": "for-the-notes-app", "LANG": "C.UTF-8",
                                 "UNLISTED_SECRET": "database-password",
                                 "AIMLAPI_KEY_COPY": KEY}).start()
    wait_for(dump.exists, timeout=60)
    wait_for(lambda: status_json(cfg)["hooks"]["undelivered"] == 0)
    assert d.stop() == 0
    env = json.loads(dump.read_text())
    assert all(KEY not in value for value in env.values())
    assert "STTWATCH_TEST_KEY" not in env and "AIMLAPI_KEY_COPY" not in env
    assert "UNLISTED_SECRET" not in env
    assert env["NOTES_TOKEN"] == "for-the-notes-app" and env["LANG"] == "C.UTF-8"
    assert "PATH" in env and env["STTWATCH_STATE"] == "done"
    assert env["STTWATCH_SOURCE"] == str(tmp_path / "inbox" / "talk.mp3")
    # A long hooks.timeout holds the event longer than the command and the POST may take.
    claimed = [e for e in d.events() if e["event"] == "hook_delivered"]
    assert len(claimed) == 1


def test_the_hooks_key_variable_is_refused_in_hooks_env(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, hooks={"command": ["true"], "env": ["STTWATCH_TEST_KEY"]})
    got = run_cli("check", "--config", str(cfg))
    assert got.code != 0 and "hooks.env" in got.err and "STTWATCH_TEST_KEY" in got.err


def test_a_delivery_lease_outlasts_the_hook_timeout() -> None:
    from sttwatch.config import HooksConfig
    from sttwatch.hooks import lease_for
    assert lease_for(HooksConfig(command=("true",), timeout=30.0)) >= 120.0
    assert lease_for(HooksConfig(command=("true",), timeout=600.0)) > 2 * 600.0 + 10.0


def test_a_failing_hook_is_retried_and_shown_in_status(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    cfg = write_config(tmp_path, fake.base_url,
                       hooks={"command": ["sh", "-c", "echo notes app is away >&2; exit 3"]})
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "kept for later")
    d = daemon_factory(cfg).start()
    wait_for(lambda: "hooks: 1 event(s) undelivered, oldest" in run_cli(
        "status", "--config", str(cfg)).out, timeout=60)
    wait_for(lambda: "last error: hook command exited 3: notes app is away" in run_cli(
        "status", "--config", str(cfg)).out, timeout=30)
    assert events(d, "hook_failed")[0]["retry_in"] >= 4
    assert d.stop() == 0


@pytest.mark.slow
def test_hook_events_survive_three_kills_with_stable_ids(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    fake.update(task_seconds=0.2)
    log = tmp_path / "hook.log"
    cfg = write_config(tmp_path, fake.base_url, daemon={"lease_seconds": 5},
                       hooks={"command": ["sh", "-c", APPEND, str(log)]})
    texts = drop(tmp_path / "inbox", 100)
    d = daemon_factory(cfg)
    for at_least in (15, 45, 75):
        d.start()
        wait_for(lambda n=at_least: len(hook_lines(log)) >= n, timeout=120)  # type: ignore[misc]
        d.kill()
    d.start()
    wait_for(lambda: {line[2] for line in hook_lines(log)} == {str(p) for p in texts},
             timeout=180)
    wait_for(lambda: status_json(cfg)["hooks"]["undelivered"] == 0, timeout=60)
    assert d.stop() == 0
    lines = hook_lines(log)
    ids = {}
    for line in lines:
        assert ids.setdefault(line[2], line[0]) == line[0], "a repeat with another id"
    repeats = len(lines) - len(texts)
    twice = Counter(line[2] for line in lines).most_common(3)
    assert 0 <= repeats <= 3, f"{repeats} repeats for 3 kills: {twice}"
    assert all(line[1] == "done" for line in lines)
