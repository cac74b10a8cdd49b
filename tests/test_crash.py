"""SIGKILL a real daemon at random moments with many files in flight; nothing is lost."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from conftest import transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_while_in_flight_loses_nothing(tmp_path: Path, fake: FakeService,
                                               daemon_factory, seed: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    fake.update(task_seconds=0.6, concurrency=8, create_latency=0.03)
    cfg = write_config(tmp_path, fake.base_url, api={"max_in_flight": 16})
    texts = {tmp_path / "inbox" / f"rec{i:03}.mp3": f"recording number {i}" for i in range(60)}
    for path, text in texts.items():
        make_fake_audio(path, text)

    kills = 0
    for _ in range(3):
        d = daemon_factory(cfg).start()
        # Kill anywhere from start-up to well into the run (creates, polls, writes).
        time.sleep(rng.uniform(0.3, 2.5))
        d.kill()
        kills += 1
    final = daemon_factory(cfg).start()
    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=120)
    assert final.stop() == 0

    counts = fake.creates_by_text()
    extra = sum(counts.values()) - len(texts)
    print(f"seed {seed}: {kills} kills, {extra} extra creates, {len(fake.fetches())} fetches")
    assert set(counts) == set(texts.values())
    assert 0 <= extra <= kills, f"{extra} extra creates for {kills} kills: {counts}"
    leftovers = list((tmp_path / "inbox").glob(".*.tmp"))
    assert leftovers == []
