"""Per-task query times and the longest unqueried gap, in the model and over HTTP."""

from __future__ import annotations

import httpx
import pytest

from app.sandbox.app import create_sandbox_app
from app.sandbox.state import MAX_QUERY_TIMES_PER_TASK, Instant, Sandbox, SandboxConfig, TaskSpec

T0 = Instant(wall=1_800_000_000.0, mono=500.0)


def at(offset: float) -> Instant:
    return Instant(wall=T0.wall + offset, mono=T0.mono + offset)


class TestLongestGap:
    @pytest.mark.parametrize(
        ("offsets", "longest"),
        [
            ([], None),
            ([4.0], 4.0),  # creation -> first query counts
            ([1.0, 2.0, 7.5, 8.0], 5.5),
            ([3.0, 3.5, 4.0], 3.0),
            ([0.0, 0.0], 0.0),
        ],
    )
    def test_longest_gap(self, offsets: list[float], longest: float | None) -> None:
        sandbox = Sandbox(SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=1))
        (task,) = sandbox.create_tasks(TaskSpec("minimax", duration_s=2), T0)
        for offset in offsets:
            sandbox.observe(task, at(offset))
        assert task.longest_gap_s == longest
        assert task.query_times == [T0.wall + offset for offset in offsets]

    def test_times_are_capped_but_the_gap_stays_exact(self) -> None:
        sandbox = Sandbox(SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=1))
        (task,) = sandbox.create_tasks(TaskSpec("jimmy", duration_s=2), T0)
        count = MAX_QUERY_TIMES_PER_TASK + 5
        for index in range(count):
            sandbox.observe(task, at(float(index)))
        sandbox.observe(task, at(count + 9.0))
        assert len(task.query_times) == MAX_QUERY_TIMES_PER_TASK
        assert task.longest_gap_s == 10.0
        assert task.polls == count + 1
        assert task.last_query_at == T0.wall + count + 9.0


class FixedClock:
    def __init__(self) -> None:
        self.wall = T0.wall
        self.mono = T0.mono

    def __call__(self) -> Instant:
        return Instant(wall=self.wall, mono=self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


async def test_read_task_reports_queries_and_longest_gap() -> None:
    clock = FixedClock()
    app = create_sandbox_app(SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=3), clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as http:
        created = (
            await http.post("/_sandbox/tasks", json={"provider": "minimax", "duration_s": 10})
        ).json()
        url = f"/_sandbox/tasks/minimax/{created['id']}"
        state = (await http.get(url)).json()
        assert (state["queries"], state["longest_gap_s"], state["last_query_at"]) == (
            [],
            None,
            None,
        )
        for step in (2.0, 6.0, 1.0):
            clock.advance(step)
            response = await http.get(
                "/v1/query/t2a_async_query_v2",
                params={"task_id": created["id"]},
                headers={"Authorization": "Bearer test-key"},
            )
            assert response.status_code == 200
        state = (await http.get(url)).json()
    assert state["queries"] == [T0.wall + 2.0, T0.wall + 8.0, T0.wall + 9.0]
    assert state["longest_gap_s"] == 6.0
    assert state["last_query_at"] == T0.wall + 9.0
    assert state["polls"] == 3
