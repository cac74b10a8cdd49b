"""SIGKILL a real daemon at random moments with many files in flight; nothing is lost.

The moments are picked by progress, not by the clock: after a random number of further
creates or of further transcripts (0 = right after start-up), so a slow machine kills at
the same points of the work as a fast one. ``pytest --soak`` scales it up (250 files, 12
kills per seed) for the figures in docs/reliability.md.
"""

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
                                               daemon_factory, seed: int,  # type: ignore[no-untyped-def]
                                               soak: bool) -> None:
    files, kills = (250, 12) if soak else (60, 3)
    rng = random.Random(seed)
    fake.update(task_seconds=0.6, concurrency=8, create_latency=0.03)
    cfg = write_config(tmp_path, fake.base_url, api={"max_in_flight": 16})
    texts = {tmp_path / "inbox" / f"rec{i:03}.mp3": f"recording number {i}"
             for i in range(files)}
    for path, text in texts.items():
        make_fake_audio(path, text)

    def creates() -> int:
        return sum(fake.creates_by_text().values())

    def written() -> int:
        return sum(transcript(p) == t for p, t in texts.items())

    moments = []
    for _ in range(kills):
        d = daemon_factory(cfg).start()
        d.wait_started()
        what, now = rng.choice([("creates", creates), ("transcripts", written)])
        target = now() + rng.randint(0, files // (kills + 1))
        # Kill at a point of the work: creates, polls or writes under way.
        wait_for(lambda now=now, target=target: now() >= target, timeout=120)  # type: ignore[misc]
        d.kill()
        moments.append(f"{what}>={target}")
    restarted = time.monotonic()
    final = daemon_factory(cfg).start()
    wait_for(lambda: written() == files, timeout=300)
    recovered = time.monotonic() - restarted
    assert final.stop() == 0

    counts = fake.creates_by_text()
    extra = sum(counts.values()) - len(texts)
    print(f"\nseed {seed}: {kills} kills over {files} files, {files - written()} lost, "
          f"{extra} extra creates, {len(fake.fetches())} fetches, last restart to all "
          f"written {recovered:.1f} s; kills at {', '.join(moments)}")
    assert set(counts) == set(texts.values())
    assert 0 <= extra <= kills, f"{extra} extra creates for {kills} kills: {counts}"
    leftovers = list((tmp_path / "inbox").glob(".*.tmp"))
    assert leftovers == []
