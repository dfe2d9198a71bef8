"""The sizing benchmark's plan, results and report (``bench/sizing.py`` runs it).

The report is a section of ``docs/performance.md``: two tables of tasks/s (rows: worker processes, columns:
concurrency per process), one for an I/O-bound and one for a CPU-bound handler, and guidance worded from those
numbers, never from expectations: the knee of each row (the first concurrency within 10 % of the row's best), the
fewest processes within 10 % of the best of all, and how much concurrency changed a CPU-bound rate.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from bench.report import Machine
from bench.sizing_app import CPU_TASK, IO_TASK

KNEE_SHARE: Final = 0.9
"""The knee of a row: the first (smallest) concurrency whose rate is within 10 % of the row's best."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one run of the benchmark measures."""

    io_ms: float
    """Milliseconds the I/O-bound handler waits (more than 0)."""
    cpu_ms: float
    """Milliseconds of CPU time the CPU-bound handler uses (more than 0)."""
    io_processes: tuple[int, ...]
    io_concurrency: tuple[int, ...]
    cpu_processes: tuple[int, ...]
    cpu_concurrency: tuple[int, ...]
    io_seconds: float
    """The length an I/O-bound run would have at its ideal rate (P x C / wait); it sets the tasks per run."""
    min_tasks: int
    max_tasks: int
    cpu_tasks_per_process: int
    """Tasks per CPU-bound run, per process that can have a core of its own."""
    cores: int
    """``os.cpu_count()`` of the machine."""

    def io_tasks(self, processes: int, concurrency: int) -> int:
        ideal = processes * concurrency / (self.io_ms / 1000)
        return int(min(self.max_tasks, max(self.min_tasks, ideal * self.io_seconds)))

    def cpu_tasks(self, processes: int) -> int:
        return self.cpu_tasks_per_process * min(processes, max(1, self.cores))

    def cells(self) -> list[Cell]:
        io = [Cell("io", p, c, self.io_tasks(p, c)) for p in self.io_processes for c in self.io_concurrency]
        cpu = [Cell("cpu", p, c, self.cpu_tasks(p)) for p in self.cpu_processes for c in self.cpu_concurrency]
        return io + cpu


@dataclass(frozen=True)
class Cell:
    """One run: a handler kind, worker processes, slots per process, tasks."""

    kind: str
    processes: int
    concurrency: int
    tasks: int

    @property
    def task_type(self) -> str:
        return IO_TASK if self.kind == "io" else CPU_TASK

    @property
    def queue(self) -> str:
        return f"SIZING_{self.kind.upper()}_P{self.processes}_C{self.concurrency}"


@dataclass(frozen=True)
class Outcome:
    """What one run measured."""

    cell: Cell
    rate: float
    """Tasks per second between the marks."""
    timed: int
    """Tasks done between the marks."""
    seconds: float
    startup_s: float
    """From starting the worker command to the first mark."""


Grid = dict[int, dict[int, float]]
"""Rate by processes, then by concurrency."""


# ---- the report -------------------------------------------------------------------------------------------------


def grid(outcomes: list[Outcome], kind: str) -> Grid:
    rows: Grid = {}
    for o in outcomes:
        if o.cell.kind == kind:
            rows.setdefault(o.cell.processes, {})[o.cell.concurrency] = o.rate
    return rows


def knee(row: dict[int, float]) -> int:
    """The first concurrency whose rate is within 10 % of the row's best."""
    best = max(row.values())
    return min(c for c, rate in row.items() if rate >= KNEE_SHARE * best)


def _procs(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def _table(rows: Grid, *, bold_knee: bool) -> list[str]:
    columns = sorted({c for row in rows.values() for c in row})
    lines = ["| Processes | " + " | ".join(f"concurrency {c}" for c in columns) + " |"]
    lines.append("|---:|" + "---:|" * len(columns))
    for p in sorted(rows):
        row, cells = rows[p], []
        for c in columns:
            text = f"{row[c]:,.0f}" if c in row else "-"
            cells.append(f"**{text}**" if bold_knee and c in row and c == knee(row) else text)
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def _per_core(processes: int, cores: int) -> str:
    share = processes / max(1, cores)
    return f"{share:g} process per core" if share == 1 else f"{share:g} processes per core"


def fewest_processes(rows: Grid) -> int:
    """The fewest processes whose best rate is within 10 % of the best of all."""
    best = {p: max(row.values()) for p, row in rows.items()}
    return min(p for p, rate in best.items() if rate >= KNEE_SHARE * max(best.values()))


def io_guidance(rows: Grid, plan: Plan) -> str:
    wait_s = plan.io_ms / 1000
    parts = []
    for p in sorted(rows):
        row, k = rows[p], knee(rows[p])
        best = max(row.values())
        drop = 1 - min(rate for c, rate in row.items() if c >= k) / best
        each = "" if p == 1 else f" ({best / p:,.0f} per process)"
        tail = "" if drop <= 1 - KNEE_SHARE else f", then fell by up to {_pct(drop)} with more slots"
        if k == max(row) and len(row) > 1:
            verb = "was" if p == 1 else "were"
            parts.append(
                f"{_procs(p)} {verb} still growing at {k} slots each, the most measured: {best:,.0f} tasks/s{each}"
            )
        else:
            parts.append(f"{_procs(p)} reached {best:,.0f} tasks/s{each} from {k} slots each{tail}")
    first = min(rows)
    ceiling = max(rows[first].values()) / first
    k = knee(rows[first])
    text = (
        f"**I/O-bound handlers** (each waits {plan.io_ms:g} ms). Up to the knee (the first concurrency within 10 % "
        f"of the row's best): " + "; ".join(parts) + ". "
        f"A slot is held for the whole wait, so by Little's law a process needs at least ceiling x wait slots to "
        f"reach its ceiling: {ceiling:,.0f} tasks/s x {wait_s:g} s = {ceiling * wait_s:,.0f} here, and the knee "
        f"measured with {_procs(first)} was {k}. The ceiling comes from the CPU each task costs, not from the wait, "
        f"so the slots needed grow with the wait: for a handler that waits W seconds, scale the knee, about "
        f"{k} x W / {wait_s:g} s slots per process "
        f"({k * 0.1 / wait_s:,.0f} for 100 ms, {k * 0.5 / wait_s:,.0f} for 500 ms), and raise the queue's "
        f"`max_concurrent` (default 100) to at least processes x slots."
    )
    if len(rows) > 1:
        last, enough = max(rows), fewest_processes(rows)
        gain = max(rows[last].values()) / max(rows[first].values())
        text += (
            f" {_procs(last)} gave {gain:.2f} times the best rate of {_procs(first)}; the best rate (within 10 %) "
            f"took {_procs(enough)} on this {plan.cores}-core machine ({_per_core(enough, plan.cores)}), "
            f"with {knee(rows[enough])} slots each."
        )
    return text


def cpu_guidance(rows: Grid, plan: Plan) -> str:
    best = {p: max(row.values()) for p, row in rows.items()}
    enough = fewest_processes(rows)
    by_p = ", ".join(f"{_procs(p)} {best[p]:,.0f}" for p in sorted(best))
    where = _per_core(enough, plan.cores)
    usable = min(max(rows), max(1, plan.cores))  # the cores the measured processes could keep busy
    ideal = usable / (plan.cpu_ms / 1000)
    overall = max(best.values())
    if len(rows) == 1:
        grew = "measured with"
    elif enough < max(rows):
        grew = "throughput stopped growing (within 10 %) at"
    else:
        grew = "throughput was still growing at the most processes measured,"
    text = (
        f"**CPU-bound handlers** (each computes {plan.cpu_ms:g} ms). The best rate over concurrency was {by_p} "
        f"tasks/s: {grew} {_procs(enough)} on this {plan.cores}-core machine ({where}), at {_pct(overall / ideal)} "
        f"of the ideal {ideal:,.0f} tasks/s "
        f"({usable} core{'s' if usable > 1 else ''} / {plan.cpu_ms:g} ms)"
    )
    if overall < KNEE_SHARE * ideal:
        text += ": the rest of the CPU went to the library's own work per task, nats-server and this benchmark"
    text += "."
    spread = {p: 1 - min(row.values()) / max(row.values()) for p, row in rows.items() if len(row) > 1}
    if not spread:
        return text
    widest = max(spread, key=lambda p: spread[p])
    if spread[widest] <= 1 - KNEE_SHARE:
        text += (
            f" Concurrency changed the rate by at most {_pct(spread[widest])} at any process count: a process "
            f"computes one handler at a time however many slots it has, so size CPU-bound work by processes, not "
            f"slots."
        )
    else:
        row = rows[widest]
        text += (
            f" Concurrency changed the rate by up to {_pct(spread[widest])} (with {_procs(widest)}: "
            + ", ".join(f"{row[c]:,.0f} at {c}" for c in sorted(row))
            + ")."
        )
    return text


def summary(io: Grid, cpu: Grid, plan: Plan) -> str:
    """One line per kind of handler: processes per core and slots per process, as measured here."""
    lines = [f"In short, on this {plan.cores}-core machine:"]
    if io:
        enough = fewest_processes(io)
        row, k = io[enough], knee(io[enough])
        slots = f"at least {k} slots each (the most measured)" if k == max(row) and len(row) > 1 else f"{k} slots each"
        lines.append(
            f"- I/O-bound ({plan.io_ms:g} ms wait): {_per_core(enough, plan.cores)}, {slots}; scale the slots with "
            f"the wait."
        )
    if cpu:
        enough = fewest_processes(cpu)
        spread = max((1 - min(row.values()) / max(row.values()) for row in cpu.values()), default=0.0)
        k = max(knee(row) for row in cpu.values())
        slots = "any concurrency (it made no difference)" if spread <= 1 - KNEE_SHARE else f"{k} slots each (the knee)"
        lines.append(f"- CPU-bound ({plan.cpu_ms:g} ms of CPU): {_per_core(enough, plan.cores)}, {slots}.")
    return "\n".join(lines)


def section(outcomes: list[Outcome], plan: Plan, machine: Machine, seconds: float, command: str) -> str:
    io, cpu = grid(outcomes, "io"), grid(outcomes, "cpu")
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Sizing: processes and slots per core",
        "",
        "Generated by `./dev bench --sizing` (`bench/sizing.py`); the lines between the markers are rewritten on "
        "every full run.",
        "",
        f"- Date: {when}, whole run {_duration(seconds)}",
        f"- Machine: {machine.cores} cores, {machine.cpu}, {machine.platform}; Python {machine.python}, "
        f"nats-py {machine.nats_py}, {machine.nats_server}; worker event loop {loop}",
        f"- Settings: one run per cell; I/O-bound runs of {plan.min_tasks:,} to {plan.max_tasks:,} tasks, "
        f"CPU-bound runs of {plan.cpu_tasks_per_process:,} tasks per process up to the cores",
        f"- Reproduce: `{command}`"
        + ("" if "--quick" in command else " (`--quick`: a small smoke run that writes nothing)"),
        "",
    ]
    if io:
        lines += [f"I/O-bound handler (awaits `asyncio.sleep({plan.io_ms / 1000:g})`), tasks/s:", ""]
        lines += [*_table(io, bold_knee=True), ""]
        ideal = ", ".join(
            f"{min(io) * c / (plan.io_ms / 1000):,.0f}" for c in sorted({c for r in io.values() for c in r})
        )
        lines += [
            f"In bold: the knee of each row. The ideal, if a slot did nothing but wait, is processes x concurrency / "
            f"{plan.io_ms / 1000:g} s ({ideal} tasks/s for {_procs(min(io))} at the concurrencies above).",
            "",
        ]
    if cpu:
        lines += [f"CPU-bound handler (computes {plan.cpu_ms:g} ms of CPU time in pure Python), tasks/s:", ""]
        lines += [*_table(cpu, bold_knee=False), ""]
    if io:
        lines += [io_guidance(io, plan), ""]
    if cpu:
        lines += [cpu_guidance(cpu, plan), ""]
    if io or cpu:
        lines += [summary(io, cpu, plan), ""]
    lines += [
        "How it is measured: each cell is one run on a fresh nats-server (loopback, file storage). A new queue is "
        "filled with the tasks first, then `python -m asyncjobs worker bench.sizing_app:router --processes P "
        "--concurrency C` drains it; the run is timed from when the first 10 % of the tasks are done (worker "
        "start-up left out) until the queue is empty, reading the items left every 10 ms. The workers, nats-server "
        "and the benchmark share the cores.",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def console_table(outcomes: list[Outcome]) -> str:
    lines = ["| Kind | Processes | Concurrency | Tasks | Timed | Seconds | Start-up s | Tasks/s |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        c = o.cell
        lines.append(
            f"| {c.kind} | {c.processes} | {c.concurrency} | {c.tasks} | {o.timed} | {o.seconds:.2f} | "
            f"{o.startup_s:.2f} | {o.rate:.0f} |"
        )
    return "\n".join(lines)
