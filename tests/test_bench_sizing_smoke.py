"""The sizing benchmark (``bench/sizing.py``): a quick run end to end, and the report's wording from numbers.

The quick run is one small I/O-bound and one small CPU-bound cell, each on its own nats-server (loopback), with the
real worker command as a subprocess; it writes nothing. The full run (``./dev bench --sizing``) takes minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Machine
from bench.sizing_report import Cell, Grid, Outcome, Plan, fewest_processes, knee, section

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_quick_run_prints_positive_rates() -> None:
    command = [sys.executable, "-m", "bench.sizing", "--quick", "--no-write"]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in ("io", "cpu"):
            rows[cells[0]] = cells
    assert set(rows) == {"io", "cpu"}, done.stdout
    for kind, cells in rows.items():
        processes, concurrency, tasks, timed, rate = (float(cells[i]) for i in (1, 2, 3, 4, -1))
        assert (processes, concurrency) == ((1, 50) if kind == "io" else (1, 10))
        assert 0 < timed < tasks
        assert rate > 0, kind
    assert "## Sizing: processes and slots per core" in done.stdout


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({10: 500.0, 50: 2000.0, 100: 2300.0, 200: 2400.0}, 100),  # 2,300 is within 10 % of 2,400, 2,000 is not
        ({10: 500.0, 50: 2200.0, 100: 2400.0, 400: 1500.0}, 50),  # a fall after the best does not move the knee
        ({1: 400.0, 10: 390.0}, 1),  # flat: the first concurrency
        ({10: 100.0}, 10),
    ],
)
def test_knee_is_the_first_concurrency_within_10_percent_of_the_best(row: dict[int, float], expected: int) -> None:
    assert knee(row) == expected


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ({1: {1: 400.0}, 2: {1: 760.0}, 4: {1: 780.0}}, 2),
        ({1: {1: 400.0}, 2: {1: 420.0}}, 1),
        ({1: {1: 300.0}, 2: {1: 500.0}, 4: {1: 800.0}}, 4),
    ],
)
def test_fewest_processes_within_10_percent_of_the_best(rows: Grid, expected: int) -> None:
    assert fewest_processes(rows) == expected


def _plan(cores: int) -> Plan:
    return Plan(
        io_ms=20.0,
        cpu_ms=2.0,
        io_processes=(1, 2),
        io_concurrency=(10, 50, 100),
        cpu_processes=(1, 2, 4),
        cpu_concurrency=(1, 10),
        io_seconds=3.0,
        min_tasks=1000,
        max_tasks=12000,
        cpu_tasks_per_process=2000,
        cores=cores,
    )


def _outcomes(kind: str, rows: Grid) -> list[Outcome]:
    return [
        Outcome(Cell(kind, p, c, 1000), rate=rate, timed=900, seconds=1.0, startup_s=0.5)
        for p, row in rows.items()
        for c, rate in row.items()
    ]


def test_the_guidance_follows_the_numbers() -> None:
    machine = Machine("test cpu", 2, "3.11", "2", "3", "nats-server: v2", "linux")
    io = {1: {10: 480.0, 50: 2100.0, 100: 2400.0, 200: 2350.0}, 2: {10: 950.0, 50: 3000.0, 100: 3400.0}}
    cores_bound = {1: {1: 400.0, 10: 395.0}, 2: {1: 760.0, 10: 750.0}, 4: {1: 770.0, 10: 700.0}}
    keeps_growing = {1: {1: 400.0, 10: 200.0}, 2: {1: 500.0, 10: 480.0}, 4: {1: 900.0, 10: 880.0}}

    bound = section(_outcomes("io", io) + _outcomes("cpu", cores_bound), _plan(2), machine, 200.0, "./dev bench")
    growing = section(_outcomes("cpu", keeps_growing), _plan(2), machine, 200.0, "./dev bench")

    assert "| 1 | 480 | 2,100 | **2,400** | 2,350 |" in bound
    assert "| 2 | 950 | 3,000 | **3,400** | - |" in bound
    assert "1 process reached 2,400 tasks/s from 100 slots each" in bound
    assert "2 processes were still growing at 100 slots each, the most measured: 3,400 tasks/s" in bound
    assert "2,400 tasks/s x 0.02 s = 48 here" in bound
    assert "I/O-bound (20 ms wait): 1 process per core, at least 100 slots each (the most measured)" in bound
    assert "stopped growing (within 10 %) at 2 processes on this 2-core machine (1 process per core)" in bound
    assert "at most 9 % at any process count" in bound
    assert "any concurrency (it made no difference)" in bound
    assert (
        "still growing at the most processes measured, 4 processes on this 2-core machine (2 processes per core)"
        in growing
    )
    assert "Concurrency changed the rate by up to 50 % (with 1 process: 400 at 1, 200 at 10)" in growing
    assert "I/O-bound handlers" not in growing
