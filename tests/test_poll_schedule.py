"""When the poller fetches a job: near the learned finish time first, then backing off."""

from __future__ import annotations

import itertools

import pytest

from sttwatch.schedule import PollSchedule

AGES = [i * 0.05 for i in range(12001)]  # 0 .. 600 s


@pytest.mark.parametrize("first_poll", [0.5, 1.0, 3.0])
def test_without_history_the_first_fetch_waits_first_poll(first_poll: float) -> None:
    assert PollSchedule(first_poll, 20.0, []).first_delay() == first_poll


def test_history_moves_the_first_fetch_to_the_typical_duration() -> None:
    schedule = PollSchedule(1.0, 20.0, [1.9, 2.1, 2.0, 1.95, 2.05])
    assert schedule.first_delay() == pytest.approx(2.0, abs=0.05)
    for _ in range(40):  # recent tasks got slower: the schedule follows them
        schedule.learn(5.0)
    assert schedule.first_delay() == pytest.approx(5.0)


def test_first_fetch_stays_within_the_bounds() -> None:
    assert PollSchedule(1.0, 20.0, [300.0, 400.0]).first_delay() == 20.0
    assert PollSchedule(1.0, 20.0, [0.001]).first_delay() == 0.1


def test_before_the_expected_time_the_next_fetch_aims_at_it() -> None:
    schedule = PollSchedule(1.0, 20.0, [6.0])
    for age in (0.0, 1.0, 3.5, 5.5):
        assert age + schedule.next_delay(age) == pytest.approx(6.0)


@pytest.mark.parametrize(("history", "cap"), [([], 20.0), ([2.0], 20.0), ([8.0], 5.0),
                                              ([], 0.1)])
def test_next_delay_backs_off_with_age_within_bounds(history: list[float], cap: float) -> None:
    schedule = PollSchedule(1.0, cap, history)
    delays = [schedule.next_delay(age) for age in AGES]
    assert all(0.1 <= d <= cap for d in delays)
    after = [d for age, d in zip(AGES, delays, strict=True) if age >= schedule.expected()]
    assert all(b >= a for a, b in itertools.pairwise(after))  # never faster as the job ages
    assert after[-1] == cap  # an old job is fetched every `cap` seconds


def test_just_after_the_expected_time_fetches_come_quickly() -> None:
    schedule = PollSchedule(1.0, 20.0, [2.0])
    assert schedule.next_delay(2.0) == pytest.approx(0.3)
    assert schedule.next_delay(2.5) == pytest.approx(0.375)
    assert schedule.next_delay(60.0) == pytest.approx(9.0)
