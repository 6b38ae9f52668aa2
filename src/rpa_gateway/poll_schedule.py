"""When to ask the platform whether a run has ended.

A schedule is a list of poll times, in seconds after the create, then a fixed gap
forever.  Today's schedule backs off (1, 3, 7, 15, 25, ... s).  A learned schedule
comes from the project's recent run durations (a lognormal fit): no poll before the
early part of the distribution, polls ``gap`` apart across it, backing off beyond it.
The gap is the latency aimed for (``RPA_POLL_TARGET_LATENCY``), widened until the
schedule makes no more polls per run than polling every ``ceiling`` seconds would;
should that cost more latency than today's schedule, today's poll count is the budget
instead.  When the band starts late (a minute, by default) and the budget leaves room,
one poll goes where today's first would (it sees a robot that fails at once).  All is
judged on the fitted distribution, so the choice is computed once per model, not per run.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

MIN_SAMPLES = 8  # fewer recent runs than this: today's schedule
SIGMA_FLOOR = 0.02  # runs of an exactly fixed length still vary by a little
# Durations spread wider than this (log scale; 1.5: the middle 99 % span a factor of
# 2300) leave nothing to learn: today's schedule.  Nor is a band of more polls than
# MAX_BAND_POLLS made (a schedule is made on the event loop).
MAX_SIGMA = 1.5
MAX_BAND_POLLS = 5000
EARLY_POLL_AFTER = 6  # query intervals
_EDGE = 0.005  # the band covers all but this share of runs on each side
_GRID = 400  # quantiles the choice is judged on
_GAP_STEP = 1.15


@dataclass(frozen=True, slots=True)
class Schedule:
    times: tuple[float, ...]  # poll times after the create, increasing, at least one
    tail_gap: float  # after the last of ``times``, a poll every ``tail_gap`` seconds
    learned: bool = False

    def next_poll(self, elapsed: float) -> float:
        """The first poll time strictly after ``elapsed`` seconds."""
        return self._poll_at_or_after(elapsed, strictly=True)[0]

    def catches(self, duration: float) -> tuple[float, int]:
        """When a run of ``duration`` seconds is seen ended, and the polls it took."""
        return self._poll_at_or_after(duration, strictly=False)

    def _poll_at_or_after(self, t: float, *, strictly: bool) -> tuple[float, int]:
        times = self.times
        index = bisect_left(times, t)
        while index < len(times) and (times[index] < t or (strictly and times[index] == t)):
            index += 1
        if index < len(times):
            return times[index], index + 1
        last = times[-1]
        steps = max(1, math.ceil((t - last) / self.tail_gap))
        if strictly and last + steps * self.tail_gap <= t:
            steps += 1
        return last + steps * self.tail_gap, len(times) + steps


def backoff_schedule(first_delay: float, factor: float, ceiling: float) -> Schedule:
    """Today's schedule: ``first_delay``, then gaps growing by ``factor`` up to ``ceiling``."""
    times = [first_delay]
    gap = first_delay * factor
    while gap < ceiling and factor > 1.0:
        times.append(times[-1] + gap)
        gap *= factor
    return Schedule(tuple(times), min(max(gap, first_delay), ceiling))


def fixed_schedule(gap: float) -> Schedule:
    return Schedule((gap,), gap)


@dataclass(frozen=True, slots=True)
class DurationModel:
    """A lognormal fit of recent run durations (seconds)."""

    mu: float
    sigma: float
    samples: int

    @classmethod
    def fit(cls, durations: Sequence[float]) -> DurationModel | None:
        logs = [math.log(d) for d in durations if d > 0 and math.isfinite(d)]
        if len(logs) < MIN_SAMPLES:
            return None
        mu = sum(logs) / len(logs)
        variance = sum((x - mu) ** 2 for x in logs) / (len(logs) - 1)
        # A few samples understate the spread: widen it by their standard error.
        sigma = math.sqrt(variance) * (1.0 + 1.0 / math.sqrt(2 * (len(logs) - 1)))
        return cls(mu, max(sigma, SIGMA_FLOOR), len(logs))

    def quantile(self, p: float) -> float:
        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(p))

    def grid(self) -> list[float]:
        return [self.quantile((i + 0.5) / _GRID) for i in range(_GRID)]


@dataclass(frozen=True, slots=True)
class Judged:
    schedule: Schedule
    polls: float  # per run, on average
    p99_latency: float  # seconds from the end of the run to the poll that sees it


def judge(schedule: Schedule, durations: Sequence[float]) -> Judged:
    latencies, polls = [], 0
    for duration in durations:
        seen, count = schedule.catches(duration)
        latencies.append(seen - duration)
        polls += count
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    return Judged(schedule, polls / len(durations), p99)


def band_schedule(low: float, high: float, gap: float, ceiling: float) -> Schedule:
    """Polls ``gap`` apart from where the earliest runs have ended to past the latest,
    then backing off to ``ceiling``."""
    times = [min(low + gap, high)]
    while times[-1] < high:
        times.append(times[-1] + gap)
    step = gap * 2
    while step < ceiling:
        times.append(times[-1] + step)
        step *= 2
    return Schedule(tuple(times), ceiling, learned=True)


def learned_schedule(
    model: DurationModel, target_latency: float, ceiling: float, today: Schedule
) -> Schedule:
    if model.sigma > MAX_SIGMA:
        return today
    grid = model.grid()
    low, high = model.quantile(_EDGE), model.quantile(1 - _EDGE)
    fixed_polls = judge(fixed_schedule(ceiling), grid).polls
    now = judge(today, grid)
    candidates = []
    gap = min(target_latency, ceiling)
    while True:
        if (high - low) / gap <= MAX_BAND_POLLS:
            candidates.append(judge(band_schedule(low, high, gap, ceiling), grid))
        if gap >= ceiling:
            break
        gap = min(gap * _GAP_STEP, ceiling)
    for budget in (fixed_polls, now.polls):
        within = [c for c in candidates if c.polls <= budget + 1e-9]
        if within:
            best = min(within, key=lambda c: (c.p99_latency, c.polls))
            if best.p99_latency <= max(now.p99_latency, target_latency):
                # Polls the fixed interval would make and the band does not: early ones.
                return with_early_poll(best.schedule, fixed_polls - best.polls, today)
    return today


def with_early_poll(band: Schedule, spare: float, today: Schedule) -> Schedule:
    """``band`` with today's first poll before it when the band starts late (after
    EARLY_POLL_AFTER query intervals) and the ``spare`` polls per run allow it twice over
    (the spare is judged on the fitted distribution, not the runs to come): it sees a
    robot that fails at once.  One only: every run pays for it, and a burst of runs
    makes it a burst of requests."""
    first, early = band.times[0], today.times[0]
    if first <= EARLY_POLL_AFTER * band.tail_gap or spare < 2 or early >= first - band.tail_gap / 2:
        return band
    return Schedule((early, *band.times), band.tail_gap, learned=True)
