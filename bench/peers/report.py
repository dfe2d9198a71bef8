"""The peer benchmark's results: what was measured per system, the tables, the plot and the docs block."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.peers import env
from bench.peers.env import EnvError
from bench.report import PEERS_BEGIN as BEGIN
from bench.report import PEERS_END as END
from bench.report import Machine, write_section

DOCS: Final = env.ROOT / "docs" / "performance.md"
PLOT: Final = env.ROOT / "docs" / "peers-throughput.png"
PLOT_REQUIREMENTS: Final = ["matplotlib==3.11.2"]
"""The plotting virtualenv's (``.bench/venvs/_plot``)."""

FIGURES: Final = (
    ("enqueue", "enqueue, one call at a time", "tasks/s"),
    ("enqueue_batch", "bulk enqueue, chunks of 1,000", "tasks/s"),
    ("drain", "drain, default concurrency", "tasks/s"),
    ("cpu_worker", "drain: CPU per task, worker processes", "us"),
    ("cpu_server", "drain: CPU per task, servers (Redis, nats-server)", "us"),
    ("drain_c100", "drain, concurrency 100", "tasks/s"),
    ("steady", "steady state, 2 producers", "tasks/s"),
    ("lat_p50", "latency p50 at {rate} tasks/s", "ms"),
    ("lat_p99", "latency p99 at {rate} tasks/s", "ms"),
    ("rss_idle", "worker RSS, idle", "MB"),
    ("rss_load", "worker RSS, under load (peak)", "MB"),
    ("pss_idle", "worker PSS, idle", "MB"),
    ("pss_load", "worker PSS, under load (peak)", "MB"),
)
"""Every figure: key, label, unit, in table order."""
LABELS: Final = {
    "asyncjobs": "asyncjobs",
    "dramatiq": "Dramatiq",
    "rq": "RQ (SimpleWorker)",
    "celery": "Celery (threads)",
    "arq": "arq",
    "saq": "SAQ",
    "taskiq_nats": "taskiq-nats",
}


@dataclass(kw_only=True)
class SystemResults:
    """What one system measured, every repetition kept."""

    requirements: list[str] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)
    sweep: dict[str, float] = field(default_factory=dict)
    """Drain rate by the concurrency asked for (``"n/a"`` for a system without that knob)."""
    default_concurrency: str = ""
    notes: list[str] = field(default_factory=list)
    """Steps that failed or were skipped, with the reason."""

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)


@dataclass(kw_only=True)
class Results:
    """One run of the peer benchmark, saved as JSON so the report can be written again without measuring."""

    plan: dict[str, Any]
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    systems: dict[str, SystemResults] = field(default_factory=dict)

    def system(self, name: str) -> SystemResults:
        return self.systems.setdefault(name, SystemResults())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        systems = {name: SystemResults(**value) for name, value in data.pop("systems").items()}
        return cls(**data, systems=systems)


def _number(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.1f}" if unit == "ms" else f"{value:,.0f}"


def cell(values: list[float], unit: str) -> str:
    """The median in bold, then the range when there were several repetitions."""
    if not values:
        return "-"
    median = f"**{_number(statistics.median(values), unit)}**"
    if len(values) == 1:
        return median
    return f"{median} ({_number(min(values), unit)}-{_number(max(values), unit)})"


def table(results: Results) -> list[str]:
    """Figures as rows, systems as columns (Markdown, readable on a terminal too)."""
    names = list(results.systems)
    rate = f"{results.plan.get('latency_rate', 0):g}"
    rows = [
        "| Figure | " + " | ".join(LABELS.get(name, name) for name in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label, unit in FIGURES:
        cells = [cell(results.systems[name].figures.get(key, []), unit) for name in names]
        if all(c == "-" for c in cells):
            continue
        rows.append(f"| {label.format(rate=rate)}, {unit} | " + " | ".join(cells) + " |")
    rows.append("| default concurrency per process | " + " | ".join(_default(results, n) for n in names) + " |")
    return rows


def _default(results: Results, name: str) -> str:
    return results.systems[name].default_concurrency or "-"


def sweep_table(results: Results) -> list[str]:
    """Drain rate by concurrency per worker process, one row per system."""
    levels = [str(level) for level in results.plan.get("sweep", [])]
    if not levels or not any(s.sweep for s in results.systems.values()):
        return []
    rows = ["| System | " + " | ".join(levels) + " |", "|---|" + "---:|" * len(levels)]
    for name, system in results.systems.items():
        if not system.sweep:
            continue
        flat = system.sweep.get("n/a")
        values = [flat if flat is not None else system.sweep.get(level) for level in levels]
        shown = ["-" if v is None else _number(v, "tasks/s") for v in values]
        suffix = " (no concurrency knob: the same run in every column)" if flat is not None else ""
        rows.append(f"| {LABELS.get(name, name)}{suffix} | " + " | ".join(shown) + " |")
    return rows


def notes(results: Results) -> list[str]:
    lines = []
    for name, system in results.systems.items():
        lines += [f"- {LABELS.get(name, name)}: {note}" for note in system.notes]
    return lines


def versions(results: Results) -> str:
    parts = []
    for name, system in results.systems.items():
        own = [
            req
            for req in system.requirements
            if "==" in req and req.split("==")[0].split("[")[0].replace("-", "_") == name
        ]
        tree = f"working tree at {results.machine.get('commit', '?')}"
        parts.append(f"{LABELS.get(name, name)} {(own or [tree])[0]}")
    return "; ".join(parts)


def settings_lines(results: Results) -> list[str]:
    plan, machine = results.plan, results.machine
    runs = plan.get("runs")
    return [
        f"- Date: {results.started}, whole run {results.seconds / 60:.0f} min",
        f"- Machine: {machine.get('cores')} cores, {machine.get('cpu')}, {machine.get('platform')}; Python "
        f"{machine.get('python')}, {machine.get('nats_server')}, {machine.get('redis_server')}",
        f"- Versions: {versions(results)}",
        f"- Settings: {plan.get('tasks'):,} tasks per run, {runs} repetition{'s' if runs != 1 else ''} (median in "
        f"bold, then min-max), 2 worker processes per system; latency at {plan.get('latency_rate'):g} tasks/s for "
        f"{plan.get('latency_seconds'):g} s; sweep with {plan.get('sweep_tasks'):,} tasks per point",
    ]


def console(results: Results) -> str:
    lines = [*settings_lines(results), "", *table(results)]
    if sweep_table(results):
        lines += ["", "Drain rate (tasks/s) by concurrency per worker process:", "", *sweep_table(results)]
    if notes(results):
        lines += ["", "Notes:", *notes(results)]
    return "\n".join(lines)


_EXPLANATION: Final = """\
### What is measured

Each system runs in its own virtualenv (`.bench/venvs/<name>`, pinned versions above) through a small adapter,
`bench/peers/adapters/peer_<name>.py`, with the system's own worker command line and **2 worker processes**. Every
handler does the same work: one Redis `INCR` on a counter (and, in the latency run, one `RPUSH` of its latency),
which the orchestrator polls every 5 ms. Redis (Debian's `redis-server`, no persistence) is the broker of the
Redis-based systems and the counter of all; asyncjobs and taskiq-nats run on an embedded `nats-server` with
JetStream **file storage**. Every step starts on a flushed Redis and, for the NATS systems, a fresh `nats-server`.
Everything shares the machine's cores: producers, workers, Redis, NATS and the orchestrator. The repetitions
take turns system by system, so a drift in the machine's load hits all alike.

- **enqueue**: N tasks with one call (one awaited call) after the other, from one producer process.
- **bulk enqueue**: the system's bulk API in chunks of 1,000: asyncjobs `enqueue_many`, RQ `Queue.enqueue_many`
  (a Redis pipeline); the others have none.
- **drain**: N tasks enqueued first, then the workers started; timed from the first task done to the N-th, so
  start-up time is left out. "Default concurrency" is each system's own default (row at the bottom of the table);
  asyncjobs is also run at concurrency 100.
- **steady state**: the workers run (warmed up with 50 tasks), then two producer processes enqueue N/2 tasks each,
  one call at a time; timed from the first task done to the N-th. Producers and workers share the cores, so this
  is the rate of the whole pipeline.
- **latency**: the workers run idle (after the warm-up), one producer enqueues at a fixed rate, each task carrying
  `time.time_ns()` taken just before its enqueue call; the handler records `time.time_ns()` minus that at its start.
- **CPU per task**: during the default drain, the CPU time (user and system, from `/proc`) the worker command's
  processes used, and apart from it what the servers used: Redis for every system, plus nats-server for the NATS
  ones; each divided by the tasks done. On a machine whose cores are all busy, the rate is about the cores divided
  by the sum of the two (and the orchestrator's polling).
- **worker RSS**: the resident memory summed over every process of the worker command (a supervisor or main
  process included), idle after the warm-up, and the peak sampled during the default drain and the steady state.
  Each process counts every page it maps, so pages the processes share (the Python binary, shared libraries,
  pages a forked worker still shares with its parent) count once per process. **Worker PSS** is the same sum of
  proportional set sizes, where a page shared by n processes counts 1/n in each: the memory the command holds.
- **sweep**: drain rate with the concurrency per process set to each level (asyncjobs `--concurrency`, Dramatiq
  `--threads`, Celery `--concurrency` threads, arq `max_jobs`, SAQ `concurrency`, taskiq `--max-async-tasks`).

Settings are each system's defaults, except: Celery `--pool threads` (its default concurrency is the number of
CPUs) without gossip, mingle and heartbeats, results ignored; RQ's `SimpleWorker` (no fork per job); arq's
`poll_delay` at 10 ms instead of 0.5 s; Dramatiq `max_retries=0` (no task fails anyway). Dramatiq's Redis
consumer backs off up to 1 s when it finds its queue empty, which its latency p99 shows. asyncjobs is installed
with its `uvloop` extra, which its worker command uses when present (the default `./dev` set-up installs it too);
no other virtualenv has `uvloop`, so the other asyncio systems run on the standard event loop, as their worker
commands do by default.
"""


def section(results: Results, plot: Path | None) -> str:
    """The peers section of ``docs/performance.md``, between its markers."""
    lines = [
        "## Peers: asyncjobs against other Python job queues",
        "",
        "Generated by `./dev bench --peers` (`bench/peers/run.py`); the lines between the markers are rewritten on "
        "every full run.",
        "",
        *settings_lines(results),
        "",
        *table(results),
    ]
    if sweep_table(results):
        lines += ["", "Drain rate (tasks/s) by concurrency per worker process:", "", *sweep_table(results)]
    if plot is not None:
        lines += ["", f"![Drain rate by concurrency per worker process]({plot.name})"]
    if notes(results):
        lines += ["", "Notes:", "", *notes(results)]
    lines += [
        "",
        _EXPLANATION,
        "Reproduce: `./dev bench --peers` (installs each system into `.bench/venvs/` on first use and `redis-server` "
        "with apt-get when missing); `--quick` (500 tasks, one repetition, no docs), `--systems asyncjobs,rq`, "
        "`--runs 5`, `--tasks 5000`, `--no-sweep`, `--report-only` (rewrite this section from "
        "`.bench/peers-results.json`).",
    ]
    return "\n".join(lines)


def plot(results: Results, python: Path, out: Path) -> None:
    """Draw the sweep to ``out`` with ``bench/peers/plot.py`` run by ``python`` (a virtualenv with matplotlib).

    Raises:
        RuntimeError: the plot script failed.
    """
    series = {LABELS.get(name, name): s.sweep for name, s in results.systems.items() if s.sweep}
    script = Path(__file__).resolve().parent / "plot.py"
    done = subprocess.run(
        [str(python), str(script), str(out)],
        input=json.dumps({"levels": results.plan.get("sweep", []), "series": series}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"plotting failed: {done.stderr.strip()[-2000:]}")


def write_docs(results: Results, with_plot: bool) -> None:
    """Rewrite the peers section of ``docs/performance.md``, with the sweep plotted when there is one."""
    shown: Path | None = None
    if with_plot and any(system.sweep for system in results.systems.values()):
        try:
            plot(results, env.ensure_venv("_plot", PLOT_REQUIREMENTS), PLOT)
            shown = PLOT
        except (EnvError, RuntimeError, OSError) as exc:
            print(f"no plot: {exc}", file=sys.stderr)
    write_section(DOCS, section(results, shown), BEGIN, END)
    print(f"\nwrote {DOCS}" + (f" and {shown}" if shown else ""))


def machine() -> dict[str, Any]:
    """Where the figures were measured: the machine, the servers, and the commit of the working tree."""
    facts: dict[str, Any] = asdict(Machine.describe())
    with contextlib.suppress(OSError, EnvError, subprocess.SubprocessError):
        facts["redis_server"] = " ".join(env.redis_version().split()[:3])
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(env.ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "asyncjobs"], capture_output=True, text=True, timeout=10)
        facts["commit"] = commit.stdout.strip() + (" with local changes" if dirty.stdout.strip() else "")
    return facts


if __name__ == "__main__":  # print a saved run again: python -m bench.peers.report [.bench/peers-results.json]
    print(console(Results.load(Path(sys.argv[1] if len(sys.argv) > 1 else ".bench/peers-results.json"))))
