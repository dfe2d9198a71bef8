"""The scheduler demo (examples/scheduler_demo.py) fires every due time once across a leader handover."""

from __future__ import annotations

import pytest

from examples.scheduler_demo import EVERY, MINUTELY, PAUSED, main, run_demo


async def test_run_demo_hands_over_without_gap_or_duplicate(nats_url: str) -> None:
    summary = await run_demo(nats_url, 7.0)

    assert len(summary.fired[EVERY.name]) >= 3  # due every 2 s for 7 s, the first one 2 s after adding
    assert summary.duplicates == []
    assert summary.gaps == []
    assert summary.handover
    assert summary.leaders == ["demo-a", "demo-b"] or summary.leaders == ["demo-b", "demo-a"]
    assert PAUSED.name not in summary.fired
    assert len(summary.fired.get(MINUTELY.name, [])) <= 1
    assert summary.ok


async def test_run_demo_again_on_the_same_server(nats_url: str) -> None:
    """Schedules left by an earlier run are replaced, so the demo can run against a shared server."""
    assert (await run_demo(nats_url, 6.0)).ok
    assert (await run_demo(nats_url, 6.0)).ok


def test_main_prints_summary_and_exits_zero(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", nats_url, "--duration", "6"]) == 0

    out = capsys.readouterr().out
    assert "stopping scheduler demo-" in out
    assert "every due time fired exactly once across the handover" in out


def test_main_refuses_a_short_duration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--duration", "2"])
    assert exc.value.code == 2
