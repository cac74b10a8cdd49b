"""The faults of a field report, each driven through a real daemon: a key that comes back,
a name too long for the filesystem, a broken state file, a full disk under the state file.
Each test fails on the behaviour reported and passes now."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import KEY, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio

PROBE = 2.0  # api.probe_seconds in these tests


@pytest.mark.parametrize("arrivals", [4, 0], ids=["creates-waiting", "polls-only"])
def test_a_key_that_comes_back_resumes_within_one_probe_and_polls_wait(
        tmp_path: Path, fake: FakeService, daemon_factory, arrivals: int) -> None:  # type: ignore[no-untyped-def]
    """Finding 2: every rejected request doubled the pause, so 20 s of 401 parked 16 jobs
    in flight for minutes. Now one pause per outage, one probe per interval, polls wait."""
    fake.update(task_seconds=3.0)
    cfg = write_config(tmp_path, fake.base_url,
                       api={"max_in_flight": 16, "probe_seconds": PROBE})
    texts = {tmp_path / "inbox" / f"rec{i:02}.mp3": f"recording {i}" for i in range(16)}
    for path, text in texts.items():
        make_fake_audio(path, text)
    d = daemon_factory(cfg).start()
    wait_for(lambda: sum(fake.creates_by_text().values()) == 16, timeout=60)

    # The key is revoked with 16 jobs in flight; more files may arrive meanwhile.
    fake.update(key="sk-revoked-000000000000000000")
    later = {tmp_path / "inbox" / f"new{i}.mp3": f"arrived later {i}" for i in range(arrivals)}
    for path, text in later.items():
        make_fake_audio(path, text)
    texts.update(later)

    def rejected() -> list[float]:
        return [r.time for r in fake.records if r.status_code == 401]

    # Three probes fail after the first rejection; then the key is accepted again.
    wait_for(lambda: len(rejected()) >= 1, timeout=30)
    first = rejected()[0]
    wait_for(lambda: any(t > first + 2.5 * PROBE for t in rejected()), timeout=30)
    fake.update(key=KEY)
    back = time.monotonic()
    paused = rejected()

    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=PROBE + 20)
    assert d.stop() == 0
    resumed = min(r.time for r in fake.records if r.time >= back and r.status_code < 300)
    print(f"\narrivals {arrivals}: pause {paused[-1] - first:.1f} s, {len(paused)} rejected "
          f"requests; resumed {resumed - back:.2f} s after the key came back, done "
          f"{max(r.time for r in fake.records) - back:.1f} s after (probe every {PROBE:g} s)")
    assert resumed - back <= PROBE + 2.0
    # One probe per interval, plus the fetches already under way (4 poll workers).
    assert len(paused) <= (paused[-1] - first) / PROBE + 1 + 4
    events = [e["event"] for e in d.events()]
    assert events.count("api_key_rejected") == 1 and events.count("api_key_accepted") == 1
    assert fake.creates_by_text() == {t: 1 for t in texts.values()}  # none twice
