"""Polls placed where a project's runs end, learned from its recent runs; and a cap on the
requests the platform gets.  Gateway processes against the fake upstream, over sockets."""

from __future__ import annotations

import asyncio
import time

from rpa_gateway.poll_schedule import MIN_SAMPLES
from tests.astron_node import run_node
from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id

RUN_SECONDS = 0.6
TOKEN = "Bearer learner"


def run_many(
    base_url: str,
    project_id: str,
    count: int,
    *,
    token: str = TOKEN,
    version: int | None = None,
) -> list[dict[str, object]]:
    async def all_of_them() -> list[dict[str, object]]:
        body: dict[str, object] = {"project_id": project_id, "sid": "s", "params": {}}
        if version is not None:
            body["version"] = version
        return await asyncio.gather(*(run_node(base_url, token, body) for _ in range(count)))

    return asyncio.run(all_of_them())


def polls_of_the_newest_run(fake: FakeUpstream, project_id: str) -> int:
    newest = max(fake.runs_for(project_id), key=lambda run: run.created_at)
    return newest.queries


def until_one_poll(base_url: str, fake: FakeUpstream, project_id: str, within: float) -> int:
    """Runs one execution after another until one is seen ended with its first poll; how
    many it took (the schedule is learned at the next sync of run durations, every 5 s)."""
    deadline = time.monotonic() + within
    runs = 0
    while True:
        run_many(base_url, project_id, 1)
        runs += 1
        if polls_of_the_newest_run(fake, project_id) == 1:
            return runs
        assert time.monotonic() < deadline, "the schedule was never learned"


def test_a_project_s_runs_are_polled_once_when_they_end_even_after_a_restart(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    # A name that joined with a version would read as another project's ("x" version 1).
    unversioned = new_project_id()
    project_id = f"{unversioned}@v1"
    fake.script(project_id, duration=RUN_SECONDS)
    fake.script(unversioned, duration=RUN_SECONDS)
    # A query every second at most: a budget of one poll per run, none left for early ones.
    gateway = start_gateway(XIAOWU_RPA_TASK_QUERY_INTERVAL="1")
    # Today's schedule (0.02 s, doubling) polls such a run at 0.02, 0.06, 0.14, 0.3, 0.62 s.
    outputs = run_many(gateway.base_url, project_id, MIN_SAMPLES)
    assert all("completed_at" in o for o in outputs)
    assert min(run.queries for run in fake.runs_for(project_id)) >= 4
    until_one_poll(gateway.base_url, fake, project_id, within=20)

    started = time.time()
    outputs = run_many(gateway.base_url, project_id, 10)
    took = time.time() - started
    newest = sorted(fake.runs_for(project_id), key=lambda run: run.created_at)[-10:]
    assert [run.queries for run in newest] == [1] * 10
    assert took < RUN_SECONDS + 0.5, "seen ended soon after the end, not a poll later"

    # What one caller learned is its own: another caller's project of the same id may be
    # another robot (a project id belongs to a platform account), and "x" version 1 is
    # not the project "x@v1".  Both start from today's schedule.
    run_many(gateway.base_url, project_id, 1, token="Bearer another-account")
    assert polls_of_the_newest_run(fake, project_id) >= 4
    run_many(gateway.base_url, unversioned, 1, version=1)
    assert polls_of_the_newest_run(fake, unversioned) >= 4

    gateway.stop()
    gateway.start()  # the same data directory: what was learned is in the store
    run_many(gateway.base_url, project_id, 1)
    assert polls_of_the_newest_run(fake, project_id) == 1


def test_the_platform_gets_no_more_requests_a_second_than_the_budget(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    project_id = new_project_id()
    fake.script(project_id, duration=0.1)
    gateway = start_gateway(RPA_UPSTREAM_MAX_RPS="20")
    outputs = run_many(gateway.base_url, project_id, 40)
    assert len(outputs) == 40 and all("completed_at" in o for o in outputs)
    created = sorted(run.created_at for run in fake.runs_for(project_id))
    # 40 creates and at least 40 polls at 20 a second, a second's worth at once: the
    # last create cannot come before (40 - 20) / 20 s have passed.
    assert created[-1] - created[0] >= 0.9
    # Any 31 creates: the burst of 20, then 11 at 20 a second take 0.55 s; bounded at 0.4 s,
    # room for arrivals bunched by a loaded machine (without the budget: all within ~0.1 s).
    for i in range(len(created) - 30):
        assert created[i + 30] - created[i] > 0.4


def test_with_learning_off_every_run_keeps_the_backoff_schedule(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    project_id = new_project_id()
    fake.script(project_id, duration=RUN_SECONDS)
    gateway = start_gateway(XIAOWU_RPA_TASK_QUERY_INTERVAL="1", RPA_POLL_LEARN="false")
    run_many(gateway.base_url, project_id, MIN_SAMPLES)
    # Past the next sync of run durations (every 5 s), when a schedule would be learned.
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        run_many(gateway.base_url, project_id, 1)
    runs = fake.runs_for(project_id)
    assert len(runs) > MIN_SAMPLES + 3
    # Today's schedule (0.02 s, doubling) polls a 0.6 s run at 0.02, 0.06, 0.14, 0.3, 0.62 s.
    assert min(run.queries for run in runs) >= 4, "a learned schedule was used"


def test_each_run_is_polled_once_at_each_of_the_schedule_s_times(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    project_id = new_project_id()
    fake.script(project_id, duration=RUN_SECONDS)
    gateway = start_gateway(RPA_POLL_LEARN="false")
    for _ in range(3):
        outputs = run_many(gateway.base_url, project_id, 20)
        assert all("completed_at" in o for o in outputs)
    # Today's schedule with the tests' settings (0.02 s, doubling, every 0.2 s at most):
    # 0.02, 0.06, 0.14, 0.3, 0.5, 0.7 s; a 0.6 s run is seen ended at the sixth.  A timer
    # that fires a little early must not poll the same time twice.
    assert sorted({run.queries for run in fake.runs_for(project_id)}) == [6]
