"""Reliability under faults: the scenarios of ``bench/faults.py`` at 300 tasks lose, strand and repeat nothing.

Each test runs one scenario on its own nats-server (or three-node cluster) with two worker processes, and checks,
after the recovery window, that every offered task completed, no item is left in the queue, and a handler returned
twice only for a task the fault interrupted. A failure message holds the scenario's details (faults, producer
errors, the tasks left unfinished with their state and ``last_err``, the workers' warnings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from bench.fault_outcome import Outcome, details
from bench.fault_scenarios import FaultSettings
from bench.faults import run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TASKS: Final = 300
RECOVERY_WINDOW_S: Final = 40.0
"""Enough for a correct library: reconnecting takes up to 6 s and a dead worker's items return after 5 s."""


def _settings(tmp_path: Path, *, load_s: float) -> FaultSettings:
    return FaultSettings(tasks=TASKS, load_s=load_s, recovery_window_s=RECOVERY_WINDOW_S, workdir=tmp_path)


def _report(outcome: Outcome) -> str:
    return "\n".join(details(outcome))


def assert_recovered(outcome: Outcome) -> None:
    """Everything offered completed, nothing is left queued, and no duplicate completion lacks a cause."""
    report = _report(outcome)
    assert not outcome.error, report
    assert outcome.offered == outcome.planned == TASKS, report
    assert (outcome.lost, outcome.stuck, outcome.other_final) == (0, 0, {}), report
    assert outcome.completed == TASKS, report
    assert outcome.items_left == 0, report
    assert outcome.unexplained_duplicates == [], report


async def test_sigkilled_worker_loses_nothing(tmp_path: Path) -> None:
    outcome = await run_scenario("worker-sigkill", _settings(tmp_path, load_s=6))
    assert_recovered(outcome)
    assert outcome.in_flight_at_kill is not None and outcome.unrecorded_at_kill is not None
    # A task runs twice only when the killed worker had started it and not had its completion stored.
    assert outcome.duplicate_completions <= outcome.in_flight_at_kill + outcome.unrecorded_at_kill, _report(outcome)


async def test_server_restart_loses_nothing(tmp_path: Path) -> None:
    assert_recovered(await run_scenario("server-restart", _settings(tmp_path, load_s=6)))


async def test_server_outage_loses_nothing(tmp_path: Path) -> None:
    assert_recovered(await run_scenario("server-outage", _settings(tmp_path, load_s=6)))


async def test_cluster_leader_restarts_lose_nothing(tmp_path: Path) -> None:
    assert_recovered(await run_scenario("cluster-restart", _settings(tmp_path, load_s=10)))


async def test_cluster_without_quorum_loses_nothing(tmp_path: Path) -> None:
    outcome = await run_scenario("cluster-outage", _settings(tmp_path, load_s=10))
    assert_recovered(outcome)
    assert outcome.quorum_lost, "the second kill should have taken the cluster below a majority"
    assert outcome.complete_after_quorum == TASKS, _report(outcome)
