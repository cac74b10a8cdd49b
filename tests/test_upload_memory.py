"""A 1 GB recording is uploaded without being held in memory (issue 13): the client runs in
a child process against the fake service, whose peak RSS is read from the kernel."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_service import FakeConfig, FakeService

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from upload_memory import measure, sparse_file

GOAL = 100 * 1024 * 1024


@pytest.fixture
def svc() -> Iterator[FakeService]:
    with FakeService(FakeConfig(key="bench-key")) as service:
        yield service


def test_a_1_gb_upload_peaks_under_100_mb(tmp_path: Path, svc: FakeService) -> None:
    size = 1 << 30
    peak, _ = measure(svc.base_url, sparse_file(tmp_path, size))
    (record,) = svc.creates()
    assert record.status_code == 201 and record.body_bytes > size  # all of it arrived
    assert peak < GOAL, f"peak RSS {peak / 2**20:.0f} MB while uploading 1 GB"
