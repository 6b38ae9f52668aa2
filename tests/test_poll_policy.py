"""The poll schedule: quick first look, backing off to the configured ceiling."""

from __future__ import annotations

from rpa_gateway.supervisor import PollPolicy

POLICY = PollPolicy(
    first_delay=1.0,
    backoff=2.0,
    ceiling=10.0,
    retry_base_delay=0.5,
    max_consecutive_faults=5,
    create_connect_retries=2,
)


def test_schedule_backs_off_to_the_query_interval() -> None:
    delays = [POLICY.first_delay]
    for _ in range(6):
        delays.append(POLICY.next_delay(delays[-1]))
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_retry_delays_are_jittered_within_a_growing_cap() -> None:
    for faults, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (20, 10.0)]:
        samples = [POLICY.retry_delay(faults) for _ in range(400)]
        assert all(0 <= s <= cap for s in samples)
        assert len(set(samples)) > 300, "delays are spread, not synchronised - the first too"
        assert min(samples) < cap / 4 and max(samples) > cap * 3 / 4, "over the whole range"
