"""Prometheus metrics: the exposition uses upstream's exact sample names (docs/protocol.md, Metric names)."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asyncjobs.errors import ConfigurationError
from asyncjobs.metrics import METRICS, Counter, Gauge, Metrics, Summary, register
from asyncjobs.serving import serve_metrics

# (how to touch the metric, the sample line upstream's exposition shows, the TYPE line)
SAMPLES: list[tuple[Callable[[Metrics], None], str, str]] = [
    (
        lambda m: m.enqueue_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_enqueue_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.enqueue_error_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_enqueue_error_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.item_corrupt_error_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_item_corrupt_error_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.task_not_found_error_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_task_not_found_error_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.task_past_deadline_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_task_past_deadline_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.task_past_max_tries_count.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_task_past_max_tries_count{queue="EMAIL"} 1.0',
        "untyped",
    ),
    (lambda m: m.poll_total.labels("EMAIL").inc(3), 'choria_asyncjobs_queue_poll_total{queue="EMAIL"} 3.0', "counter"),
    (
        lambda m: m.poll_error_total.labels("EMAIL").inc(),
        'choria_asyncjobs_queue_poll_error_total{queue="EMAIL"} 1.0',
        "counter",
    ),
    (
        lambda m: m.task_update_total.labels("complete").inc(),
        'choria_asyncjobs_task_update_total{state="complete"} 1.0',
        "counter",
    ),
    (lambda m: m.task_update_error_total.inc(), "choria_asyncjobs_task_update_error_total 1.0", "counter"),
    (lambda m: m.task_dependencies_failed.inc(), "choria_asyncjobs_task_dependencies_failed 1.0", "untyped"),
    (lambda m: m.handler_busy_count.inc(2), "choria_asyncjobs_handler_busy_count 2.0", "gauge"),
    (
        lambda m: m.handler_error_total.labels("EMAIL", "email:new").inc(),
        'choria_asyncjobs_handler_error_total{queue="EMAIL",type="email:new"} 1.0',
        "counter",
    ),
    (
        lambda m: m.handler_runtime.labels("EMAIL", "email:new").observe(0.25),
        'choria_asyncjobs_handler_runtime_sum{queue="EMAIL",type="email:new"} 0.25',
        "summary",
    ),
    (
        lambda m: m.handler_runtime.labels("EMAIL", "email:new").observe(0.25),
        'choria_asyncjobs_handler_runtime_count{queue="EMAIL",type="email:new"} 1.0',
        "summary",
    ),
    (lambda m: m.scheduler_paused.set(1), "choria_asyncjobs_task_scheduler_paused 1.0", "gauge"),
    (lambda m: m.scheduler_schedules_total.set(4), "choria_asyncjobs_task_scheduler_schedules_total 4.0", "gauge"),
    (
        lambda m: m.scheduler_scheduled_count.labels("email:new", "EMAIL").inc(),
        'choria_asyncjobs_task_scheduler_scheduled_count{queue="EMAIL",type="email:new"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.scheduler_schedule_error_count.labels("email:new", "EMAIL").inc(),
        'choria_asyncjobs_task_scheduler_schedule_error_count{queue="EMAIL",type="email:new"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.election_campaigns.labels("task_scheduler", "host1", "candidate").inc(),
        'choria_asyncjobs_election_campaigns{election="task_scheduler",identity="host1",state="candidate"} 1.0',
        "untyped",
    ),
    (
        lambda m: m.election_leader.labels("task_scheduler", "host1").set(1),
        'choria_asyncjobs_election_leader{election="task_scheduler",identity="host1"} 1.0',
        "gauge",
    ),
    (
        lambda m: m.election_interval_seconds.labels("task_scheduler", "host1").set(7.5),
        'choria_asyncjobs_election_interval_seconds{election="task_scheduler",identity="host1"} 7.5',
        "gauge",
    ),
]

# Ours, not Go's: the reconciler's and the workflow runtime's metrics, in the same shape.
OURS: list[tuple[Callable[[Metrics], None], str, str]] = [
    (
        lambda m: m.reconciler_repaired_total.labels("EMAIL", "republish", "new").inc(),
        'choria_asyncjobs_reconciler_repaired_total{action="republish",queue="EMAIL",state="new"} 1.0',
        "counter",
    ),
    (
        lambda m: m.reconciler_pass_total.labels("EMAIL").inc(),
        'choria_asyncjobs_reconciler_pass_total{queue="EMAIL"} 1.0',
        "counter",
    ),
    (
        lambda m: m.workflow_runs_started.labels("etl").inc(),
        'choria_asyncjobs_workflow_runs_started_total{workflow="etl"} 1.0',
        "counter",
    ),
    (
        lambda m: m.workflow_runs_finished.labels("etl", "failed").inc(),
        'choria_asyncjobs_workflow_runs_finished_total{state="failed",workflow="etl"} 1.0',
        "counter",
    ),
    (
        lambda m: m.workflow_steps_decided.labels("etl", "skipped").inc(2),
        'choria_asyncjobs_workflow_steps_decided_total{decision="skipped",workflow="etl"} 2.0',
        "counter",
    ),
    (
        lambda m: m.workflow_release_seconds.labels("etl").observe(0.25),
        'choria_asyncjobs_workflow_release_seconds_sum{workflow="etl"} 0.25',
        "summary",
    ),
    (
        lambda m: m.workflow_release_seconds.labels("etl").observe(0.25),
        'choria_asyncjobs_workflow_release_seconds_count{workflow="etl"} 1.0',
        "summary",
    ),
    (
        lambda m: m.workflow_events_total.labels("step").inc(),
        'choria_asyncjobs_workflow_events_total{kind="step"} 1.0',
        "counter",
    ),
]


def _family_name(line: str, kind: str) -> str:
    """The metric family of a sample line: a summary's ``_sum`` and ``_count`` samples belong to one family."""
    sample = line.split("{")[0].split(" ")[0]
    if kind == "summary":
        return sample.removesuffix("_sum").removesuffix("_count")
    return sample


def _exposition(metrics: Metrics) -> str:
    registry = CollectorRegistry()
    metrics.register(registry)
    return generate_latest(registry).decode()


@pytest.mark.parametrize(("touch", "line", "kind"), SAMPLES)
def test_exposition_uses_upstream_names(touch: Callable[[Metrics], None], line: str, kind: str) -> None:
    metrics = Metrics()
    touch(metrics)
    text = _exposition(metrics)
    assert line in text.splitlines()
    sample = line.split("{")[0].split(" ")[0]
    family = "choria_asyncjobs_handler_runtime" if kind == "summary" else sample
    assert f"# TYPE {family} {kind}" in text


def test_every_upstream_metric_is_exported_and_nothing_else() -> None:
    metrics = Metrics()
    for touch, _, _ in SAMPLES:
        touch(metrics)
    text = _exposition(metrics)
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert samples == {line.split("{")[0].split(" ")[0] for _, line, _ in SAMPLES}
    assert len(samples) == 22  # 21 metrics, the summary with _sum and _count
    assert "_created" not in text
    assert "_count_total" not in text


@pytest.mark.parametrize(("touch", "line", "kind"), OURS)
def test_exposition_of_our_own_metrics(touch: Callable[[Metrics], None], line: str, kind: str) -> None:
    metrics = Metrics()
    touch(metrics)
    text = _exposition(metrics)
    assert line in text.splitlines()
    assert f"# TYPE {_family_name(line, kind)} {kind}" in text


def test_every_metric_is_listed_here() -> None:
    # A metric added to Metrics without a sample line above fails here, so its exposed name gets checked.
    listed = {_family_name(line, kind) for _, line, kind in SAMPLES + OURS}
    metrics = Metrics()
    names = {value.name for value in vars(metrics).values() if isinstance(value, Counter | Gauge | Summary)}
    assert names == listed


def test_unlabelled_metrics_start_at_zero_and_labelled_ones_empty() -> None:
    text = _exposition(Metrics())
    assert "choria_asyncjobs_task_update_error_total 0.0" in text
    assert "choria_asyncjobs_handler_busy_count 0.0" in text
    assert "choria_asyncjobs_queue_enqueue_count{" not in text


def test_values_and_gauge_operations() -> None:
    metrics = Metrics()
    metrics.enqueue_count.labels("A").inc()
    metrics.enqueue_count.labels("A").inc(2)
    metrics.enqueue_count.labels("B").inc()
    assert metrics.enqueue_count.value("A") == 3
    assert metrics.enqueue_count.value("B") == 1
    assert metrics.enqueue_count.value("C") == 0
    metrics.handler_busy_count.inc()
    metrics.handler_busy_count.inc()
    metrics.handler_busy_count.dec()
    assert metrics.handler_busy_count.value() == 1
    metrics.election_leader.labels("e", "i").set(1)
    metrics.election_leader.labels("e", "i").dec()
    assert metrics.election_leader.value("e", "i") == 0
    runtime = metrics.handler_runtime.labels("A", "t")
    runtime.observe(1.5)
    runtime.observe(0.5)
    assert (runtime.count, runtime.sum) == (2, 2.0)
    assert metrics.handler_runtime.labels("A", "t") is runtime


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda m: m.enqueue_count.labels(), "takes labels"),
        (lambda m: m.enqueue_count.labels("A", "B"), "takes labels"),
        (lambda m: m.enqueue_count.inc(), "use .labels"),
        (lambda m: m.election_leader.set(1), "use .labels"),
        (lambda m: m.handler_runtime.observe(1), "use .labels"),
        (lambda m: m.task_update_error_total.inc(-1), "counters only increase"),
    ],
)
def test_misuse_is_reported(action: Callable[[Metrics], object], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        action(Metrics())


def test_concurrent_increments_are_not_lost() -> None:
    metrics = Metrics()

    def work() -> None:
        child = metrics.poll_total.labels("Q")
        for _ in range(10_000):
            child.inc()
            metrics.handler_busy_count.inc()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.poll_total.value("Q") == 80_000
    assert metrics.handler_busy_count.value() == 80_000


def test_register_is_idempotent_per_registry() -> None:
    metrics = Metrics()
    first, second = CollectorRegistry(), CollectorRegistry()
    metrics.register(first)
    metrics.register(first)
    metrics.register(second)
    metrics.enqueue_count.labels("A").inc()
    assert first.get_sample_value("choria_asyncjobs_queue_enqueue_count", {"queue": "A"}) == 1
    assert second.get_sample_value("choria_asyncjobs_queue_enqueue_count", {"queue": "A"}) == 1
    metrics.unregister(first)
    metrics.unregister(first)
    assert first.get_sample_value("choria_asyncjobs_queue_enqueue_count", {"queue": "A"}) is None
    # Another collector with the same names is refused by the registry.
    with pytest.raises(ConfigurationError, match="Duplicated timeseries"):
        Metrics().register(second)


def test_module_register_uses_the_global_registry() -> None:
    register()
    register()
    try:
        assert prometheus_client.REGISTRY.get_sample_value("choria_asyncjobs_task_update_error_total") is not None
    finally:
        METRICS.unregister()
    assert prometheus_client.REGISTRY.get_sample_value("choria_asyncjobs_task_update_error_total") is None


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


async def test_serve_metrics_on_a_free_port() -> None:
    registry = CollectorRegistry()
    server = serve_metrics(0, host="127.0.0.1", registry=registry)
    try:
        assert server.port > 0
        METRICS.task_update_total.labels("new").inc()
        body = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{server.port}/metrics")
        assert "# TYPE choria_asyncjobs_queue_enqueue_count untyped" in body
        assert 'choria_asyncjobs_task_update_total{state="new"}' in body
    finally:
        await asyncio.to_thread(server.close)
        METRICS.unregister(registry)
    server.close()  # idempotent
    with pytest.raises(OSError):  # noqa: PT011 - any connection error will do
        await asyncio.to_thread(_fetch, f"http://127.0.0.1:{server.port}/metrics")


@pytest.mark.parametrize("port", [-1, 65536, True, 1.5])
def test_serve_metrics_rejects_bad_ports(port: int) -> None:
    with pytest.raises(ConfigurationError, match="metrics port"):
        serve_metrics(port, registry=CollectorRegistry())


def test_serve_metrics_reports_a_busy_port() -> None:
    registry = CollectorRegistry()
    with (
        serve_metrics(0, host="127.0.0.1", registry=registry) as first,
        pytest.raises(ConfigurationError, match="cannot serve metrics"),
    ):
        serve_metrics(first.port, host="127.0.0.1", registry=registry)
    METRICS.unregister(registry)
