"""The quick-start demo (examples/quickstart.py) runs end to end and reports every outcome a handler can produce."""

from __future__ import annotations

import pytest

from examples.quickstart import expected_tries, main, run_demo


@pytest.mark.parametrize(
    ("tasks", "tries"),
    [
        (1, {1: 1}),
        (200, {1: 191, 2: 5, 3: 4}),
        (3000, {1: 2865, 2: 75, 3: 60}),
    ],
)
def test_failure_plan(tasks: int, tries: dict[int, int]) -> None:
    assert expected_tries(tasks) == tries


async def test_run_demo_finishes_every_task(nats_url: str) -> None:
    summary = await run_demo(nats_url, 200, timeout=30)

    assert summary.unfinished == {}
    assert summary.states == {"complete": 199, "terminated": 1}
    # 5 tasks fail once and 4 fail twice before they succeed; the terminated one runs once.
    assert summary.tries == {1: 191, 2: 5, 3: 4}
    assert summary.failures == 5 + 2 * 4
    [last_err] = summary.terminated_errors.values()
    assert last_err == "payload 100 is not wanted: terminate task"
    assert summary.enqueue_rate > 0
    assert summary.throughput > 0
    assert summary.ok


def test_main_prints_summary_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tasks", "50"]) == 0

    out = capsys.readouterr().out
    assert "all 50 tasks finished" in out
    assert "complete" in out
    assert "terminated task" in out
    assert "'payload 25 is not wanted: terminate task'" in out
