"""Poll schedules: today's backing-off one, and those learned from a project's run durations.

Judged as a user of the platform would: how many polls a run costs and how late its end
is seen, on durations drawn afresh from the distribution the schedule was learned from.
"""

from __future__ import annotations

import math
import random

import pytest

from rpa_gateway.backends.run_times import run_seconds
from rpa_gateway.poll_schedule import (
    MAX_BAND_POLLS,
    MIN_SAMPLES,
    DurationModel,
    Schedule,
    backoff_schedule,
    fixed_schedule,
    judge,
    learned_schedule,
)
from rpa_gateway.supervisor import PollPolicy

POLICY = PollPolicy(
    first_delay=1.0,
    backoff=2.0,
    ceiling=10.0,
    retry_base_delay=0.5,
    max_consecutive_faults=5,
    create_connect_retries=2,
)
TODAY = POLICY.today()
REFERENCE = fixed_schedule(10.0)  # the reference plugin: a query every 10 s


def lognormal(median: float, sigma: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(count)]


def learned(warm_up: list[float], target: float = 2.0) -> Schedule:
    model = DurationModel.fit(warm_up)
    assert model is not None
    return learned_schedule(model, target, 10.0, TODAY)


def test_today_s_schedule_backs_off_to_the_query_interval() -> None:
    polls = [TODAY.next_poll(0.0)]
    for _ in range(6):
        polls.append(TODAY.next_poll(polls[-1]))
    assert polls == [1.0, 3.0, 7.0, 15.0, 25.0, 35.0, 45.0]
    assert backoff_schedule(1.0, 1.0, 10.0).times[:1] == (1.0,)  # no backoff: every second
    assert backoff_schedule(1.0, 1.0, 10.0).next_poll(5.5) == 6.0


def test_a_schedule_says_when_a_run_is_seen_and_after_how_many_polls() -> None:
    assert TODAY.catches(0.5) == (1.0, 1)
    assert TODAY.catches(3.0) == (3.0, 2)  # a poll at the very moment sees it
    assert TODAY.catches(16.0) == (25.0, 5)
    assert REFERENCE.catches(31.0) == (40.0, 4)


def test_retry_delays_are_jittered_within_a_growing_cap() -> None:
    for faults, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (20, 10.0)]:
        samples = [POLICY.retry_delay(faults) for _ in range(400)]
        assert all(0 <= s <= cap for s in samples)
        assert len(set(samples)) > 300, "delays are spread, not synchronised - the first too"
        assert min(samples) < cap / 4 and max(samples) > cap * 3 / 4, "over the whole range"


def test_too_few_runs_teach_nothing() -> None:
    assert DurationModel.fit([5.0] * (MIN_SAMPLES - 1)) is None
    assert DurationModel.fit([5.0, -1.0, math.nan] * MIN_SAMPLES) is not None


def test_runs_of_a_fixed_length_are_seen_with_one_poll_just_after_they_end() -> None:
    schedule = learned([10.0] * 20)
    seen, polls = schedule.catches(10.0)
    assert polls == 1
    assert 10.0 < seen < 11.0


@pytest.mark.parametrize("median", [30.0, 120.0])
def test_narrow_runs_are_seen_three_times_sooner_than_the_reference_with_fewer_polls(
    median: float,
) -> None:
    schedule = learned(lognormal(median, 0.1, 20, seed=1))
    runs = lognormal(median, 0.1, 4000, seed=2)
    ours, reference = judge(schedule, runs), judge(REFERENCE, runs)
    assert ours.polls <= reference.polls
    assert ours.p99_latency <= reference.p99_latency / 3


def test_short_narrow_runs_cost_a_few_hundredths_of_a_poll_more_than_the_reference() -> None:
    """5 s runs: the reference's first query at 10 s sees all of them, one poll each, up to
    6 s late.  Seeing them within a third of that needs a poll before some have ended."""
    schedule = learned(lognormal(5.0, 0.1, 20, seed=1))
    runs = lognormal(5.0, 0.1, 4000, seed=2)
    ours, reference = judge(schedule, runs), judge(REFERENCE, runs)
    assert reference.polls == 1.0
    assert ours.polls <= 1.1
    assert ours.p99_latency <= reference.p99_latency / 3


@pytest.mark.parametrize("median", [5.0, 30.0, 120.0])
def test_wide_runs_are_never_seen_later_than_today_nor_polled_more(median: float) -> None:
    schedule = learned(lognormal(median, 0.5, 20, seed=3))
    runs = lognormal(median, 0.5, 4000, seed=4)
    ours, today = judge(schedule, runs), judge(TODAY, runs)
    assert ours.p99_latency <= today.p99_latency
    assert ours.polls <= today.polls


def test_the_run_time_is_the_platform_s_end_less_its_start() -> None:
    assert run_seconds(1_700_000_000.0, 1_700_000_012.5) == 12.5
    assert run_seconds(1_700_000_000_000, 1_700_000_012_500) == 12.5  # milliseconds
    assert run_seconds("2026-11-28T10:00:00", "2026-11-28T10:01:30.5") == 90.5
    assert run_seconds("2026-11-28T10:00:00Z", "2026-11-28T11:00:01+01:00") == 1.0
    assert run_seconds("1700000000", "1700000003") == 3.0


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, 1_700_000_000.0),
        (1_700_000_000.0, None),
        (1_700_000_010.0, 1_700_000_000.0),  # ends before it starts
        ("2026-11-28T10:00:00", "2026-11-28T10:00:05Z"),  # a zone on one side only
        ("yesterday", "today"),
        (True, 5),
        (1_700_000_000.0, "2026-11-28T10:00:05"),
        (0, 10**15),  # longer than any run
    ],
)
def test_unreadable_or_impossible_times_give_no_run_time(start: object, end: object) -> None:
    assert run_seconds(start, end) is None


def test_runs_of_an_hour_are_also_polled_once_early_when_the_budget_leaves_room() -> None:
    """A robot that fails at once is seen then, not where runs usually end."""
    schedule = learned(lognormal(3600.0, 0.1, 64, seed=6))  # the newest 64 runs
    assert schedule.times[0] == 1.0
    assert schedule.times[1] > 2000  # then nothing until the first runs may have ended
    runs = lognormal(3600.0, 0.1, 2000, seed=106)
    ours, reference = judge(schedule, runs), judge(REFERENCE, runs)
    assert ours.polls <= reference.polls
    assert ours.p99_latency <= reference.p99_latency / 2


@pytest.mark.parametrize(
    "durations",
    [
        [30.0] * 10 + [7200.0] * 10,  # two kinds of runs under one project
        [1.0] * 10 + [86_400.0] * 10,
        lognormal(60.0, 2.0, 40, seed=7),
    ],
)
def test_durations_too_spread_to_learn_from_keep_today_s_schedule(durations: list[float]) -> None:
    model = DurationModel.fit(durations)
    assert model is not None
    assert learned_schedule(model, 2.0, 10.0, TODAY) == TODAY


def test_a_tiny_latency_aim_makes_a_bounded_schedule() -> None:
    model = DurationModel.fit(lognormal(600.0, 0.3, 64, seed=8))
    assert model is not None
    schedule = learned_schedule(model, 0.001, 10.0, TODAY)
    assert len(schedule.times) <= MAX_BAND_POLLS + 16
