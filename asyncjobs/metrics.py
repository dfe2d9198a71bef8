"""Prometheus metrics under the exact names the Go implementation exports (docs/protocol.md, Metric names).

Dashboards and alerts written for Go workers query names such as ``choria_asyncjobs_queue_enqueue_count``.
``prometheus_client``'s own ``Counter`` would expose that as ``..._enqueue_count_total`` plus a ``..._created``
series, breaking every such query. So the values live in small metric objects of our own, and one collector,
:class:`Metrics`, turns them into metric families at scrape time:

* counters whose Go name ends in ``_total`` are exposed as counters (the sample name is unchanged);
* counters whose Go name does not end in ``_total`` are exposed **untyped**, under their exact Go name: the name
  is what dashboards query, while the ``# TYPE`` line (``untyped`` where Go says ``counter``) is rarely looked
  at, and ``prometheus_client`` always writes a counter's samples with ``_total``;
* gauges are gauges, and ``choria_asyncjobs_handler_runtime`` is a summary with only ``_sum`` and ``_count``.

No ``_created`` series are exported, as Go exports none. Metrics are process-wide: :data:`METRICS` holds them
all, including the scheduler and election ones that :mod:`asyncjobs_scheduler` updates.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily, UnknownMetricFamily
from prometheus_client.registry import CollectorRegistry

from asyncjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "METRICS",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Metrics",
    "Summary",
    "SummaryChild",
    "register",
]

_ScalarMetricFamily = CounterMetricFamily | UnknownMetricFamily | GaugeMetricFamily


class CounterChild:
    """One labelled series of a :class:`Counter`."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value: float = 0.0
        """The current count."""

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (at least 0) to the counter.

        Raises:
            ConfigurationError: ``amount`` is negative; counters only go up.
        """
        if amount < 0:
            raise ConfigurationError(f"counters only increase, got {amount!r}")
        # += on a float is several bytecodes; the lock keeps increments from worker threads from being lost.
        with self._lock:
            self.value += amount


class GaugeChild:
    """One labelled series of a :class:`Gauge`."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value: float = 0.0
        """The current value."""

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the gauge."""
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from the gauge."""
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        self.value = float(value)


class SummaryChild:
    """One labelled series of a :class:`Summary`: a count and a sum of observations."""

    __slots__ = ("_lock", "count", "sum")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: int = 0
        """How many observations were made."""
        self.sum: float = 0.0
        """The total of all observations."""

    def observe(self, value: float) -> None:
        """Record one observation, e.g. a handler's run time in seconds."""
        with self._lock:
            self.count += 1
            self.sum += value


_C = TypeVar("_C", CounterChild, GaugeChild, SummaryChild)


class _Family(Generic[_C]):
    """A named metric with label names, holding one child per combination of label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], child_type: type[_C]) -> None:
        self.name: Final = name
        self.documentation: Final = documentation
        self.labelnames: Final = tuple(labelnames)
        self._child_type: type[_C] = child_type
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _C] = {}
        # An unlabelled metric has exactly one series, present (at 0) from the start as in Go.
        self._single: _C | None = self.labels() if not self.labelnames else None

    def labels(self, *values: str) -> _C:
        """Return the series for these label values (in the order of :attr:`labelnames`), creating it once.

        Raises:
            ConfigurationError: the number of values does not match the label names.
        """
        child = self._children.get(values)
        if child is not None:
            return child
        if len(values) != len(self.labelnames):
            raise ConfigurationError(
                f"metric {self.name} takes labels {self.labelnames}, got {len(values)} values: {values!r}"
            )
        with self._lock:
            return self._children.setdefault(values, self._child_type())

    def _only(self) -> _C:
        if self._single is None:
            raise ConfigurationError(f"metric {self.name} has labels {self.labelnames}: use .labels(...) first")
        return self._single

    def _series(self) -> list[tuple[tuple[str, ...], _C]]:
        with self._lock:
            return list(self._children.items())


_V = TypeVar("_V", CounterChild, GaugeChild)


class _ScalarFamily(_Family[_V]):
    def value(self, *labels: str) -> float:
        """Return the value of one series (0 when it was never touched)."""
        child = self._children.get(labels)
        return 0.0 if child is None else child.value

    def _filled(self, family: _ScalarMetricFamily, with_samples: bool) -> Metric:
        if with_samples:
            for labels, child in self._series():
                family.add_metric(labels, child.value)
        return family


class Counter(_ScalarFamily[CounterChild]):
    """A counter; exported as a counter when its name ends in ``_total``, untyped otherwise."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames, CounterChild)

    def inc(self, amount: float = 1.0) -> None:
        """Increment an unlabelled counter.

        Raises:
            ConfigurationError: the counter has labels, or ``amount`` is negative.
        """
        self._only().inc(amount)

    def family(self, *, with_samples: bool = True) -> Metric:
        """Return the prometheus metric family for a scrape."""
        kind = CounterMetricFamily if self.name.endswith("_total") else UnknownMetricFamily
        return self._filled(kind(self.name, self.documentation, labels=self.labelnames), with_samples)


class Gauge(_ScalarFamily[GaugeChild]):
    """A gauge. ``inc``, ``dec`` and ``set`` on the gauge itself raise ConfigurationError when it has labels."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames, GaugeChild)

    def inc(self, amount: float = 1.0) -> None:
        """Add to an unlabelled gauge."""
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract from an unlabelled gauge."""
        self._only().dec(amount)

    def set(self, value: float) -> None:
        """Set an unlabelled gauge."""
        self._only().set(value)

    def family(self, *, with_samples: bool = True) -> Metric:
        """Return the prometheus metric family for a scrape."""
        return self._filled(GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames), with_samples)


class Summary(_Family[SummaryChild]):
    """A summary without quantiles: ``_count`` and ``_sum`` series, as Go's default summary exports."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames, SummaryChild)

    def observe(self, value: float) -> None:
        """Record an observation on an unlabelled summary.

        Raises:
            ConfigurationError: the summary has labels.
        """
        self._only().observe(value)

    def family(self, *, with_samples: bool = True) -> Metric:
        """Return the prometheus metric family for a scrape."""
        family = SummaryMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            for labels, child in self._series():
                family.add_metric(labels, count_value=child.count, sum_value=child.sum)
        return family


class Metrics:
    """Every metric asyncjobs exports, and the ``prometheus_client`` collector that exposes them.

    Use the module's :data:`METRICS`; separate instances exist so tests can start from zero. Names are spelled
    out in full so they can be grepped against the Go sources and dashboards.
    """

    def __init__(self) -> None:
        queue, handler, election = ("queue",), ("queue", "type"), ("election", "identity")
        self.enqueue_count: Final = Counter("choria_asyncjobs_queue_enqueue_count", "Tasks enqueued", queue)
        self.enqueue_error_count: Final = Counter(
            "choria_asyncjobs_queue_enqueue_error_count", "Tasks that could not be enqueued", queue
        )
        self.item_corrupt_error_count: Final = Counter(
            "choria_asyncjobs_queue_item_corrupt_error_count", "Work queue items that could not be decoded", queue
        )
        self.task_not_found_error_count: Final = Counter(
            "choria_asyncjobs_queue_task_not_found_error_count", "Work items whose task could not be loaded", queue
        )
        self.task_past_deadline_count: Final = Counter(
            "choria_asyncjobs_queue_task_past_deadline_count", "Tasks found past their deadline", queue
        )
        self.task_past_max_tries_count: Final = Counter(
            "choria_asyncjobs_queue_task_past_max_tries_count", "Tasks found past their maximum tries", queue
        )
        self.poll_total: Final = Counter("choria_asyncjobs_queue_poll_total", "Polls of the work queue", queue)
        self.poll_error_total: Final = Counter("choria_asyncjobs_queue_poll_error_total", "Failed polls", queue)
        self.task_update_total: Final = Counter("choria_asyncjobs_task_update_total", "Task saves", ("state",))
        self.task_update_error_total: Final = Counter("choria_asyncjobs_task_update_error_total", "Failed task saves")
        self.task_dependencies_failed: Final = Counter(
            "choria_asyncjobs_task_dependencies_failed", "Tasks made unreachable by a failed dependency"
        )
        self.handler_busy_count: Final = Gauge("choria_asyncjobs_handler_busy_count", "Handlers running now")
        self.handler_error_total: Final = Counter(
            "choria_asyncjobs_handler_error_total", "Handler runs that ended in an error", handler
        )
        self.handler_runtime: Final = Summary("choria_asyncjobs_handler_runtime", "Handler run time (s)", handler)
        # Ours: the reconciler's repairs (see asyncjobs.reconciler), by the state the task was found in.
        self.reconciler_repaired_total: Final = Counter(
            "choria_asyncjobs_reconciler_repaired_total",
            "Tasks the reconciler found stuck and repaired, by action (republish, expire) and state",
            ("queue", "action", "state"),
        )
        self.reconciler_pass_total: Final = Counter(
            "choria_asyncjobs_reconciler_pass_total", "Reconciler passes over a queue's tasks", queue
        )
        self.scheduler_paused: Final = Gauge(
            "choria_asyncjobs_task_scheduler_paused", "1 while this scheduler is not the leader"
        )
        self.scheduler_schedules_total: Final = Gauge(
            "choria_asyncjobs_task_scheduler_schedules_total", "Scheduled tasks known to the scheduler"
        )
        self.scheduler_scheduled_count: Final = Counter(
            "choria_asyncjobs_task_scheduler_scheduled_count", "Tasks created by the scheduler", ("type", "queue")
        )
        self.scheduler_schedule_error_count: Final = Counter(
            "choria_asyncjobs_task_scheduler_schedule_error_count", "Failed scheduler task creations", ("type", "queue")
        )
        self.election_campaigns: Final = Counter(
            "choria_asyncjobs_election_campaigns", "Election campaigns by candidate state", (*election, "state")
        )
        workflow = ("workflow",)
        self.workflow_runs_started: Final = Counter(
            "choria_asyncjobs_workflow_runs_started_total", "Workflow runs submitted", workflow
        )
        self.workflow_runs_finished: Final = Counter(
            "choria_asyncjobs_workflow_runs_finished_total",
            "Workflow runs that ended, by outcome (complete, failed, cancelled)",
            ("workflow", "state"),
        )
        self.workflow_steps_decided: Final = Counter(
            "choria_asyncjobs_workflow_steps_decided_total",
            "Workflow steps decided by a releaser, by decision (released, skipped, unreachable)",
            ("workflow", "decision"),
        )
        self.workflow_release_seconds: Final = Summary(
            "choria_asyncjobs_workflow_release_seconds",
            "Seconds from a parent's final state being stored to its child's work item being queued",
            workflow,
        )
        self.workflow_events_total: Final = Counter(
            "choria_asyncjobs_workflow_events_total", "Task events read by workflow releasers, by kind", ("kind",)
        )
        self.election_leader: Final = Gauge("choria_asyncjobs_election_leader", "1 while this instance leads", election)
        self.election_interval_seconds: Final = Gauge(
            "choria_asyncjobs_election_interval_seconds", "Seconds between election campaigns", election
        )
        self._all: Final[tuple[Counter | Gauge | Summary, ...]] = tuple(
            value for value in vars(self).values() if isinstance(value, Counter | Gauge | Summary)
        )
        self._registries: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
        self._register_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family with its current samples (the ``prometheus_client`` collector API)."""
        for metric in self._all:
            yield metric.family()

    def describe(self) -> Iterator[Metric]:
        """Yield every metric family without samples, so registries can check names without a scrape."""
        for metric in self._all:
            yield metric.family(with_samples=False)

    def register(self, registry: CollectorRegistry = prometheus_client.REGISTRY) -> None:
        """Register these metrics with a ``prometheus_client`` registry; again with the same one does nothing.

        Raises:
            ConfigurationError: another collector already exports one of these names.
        """
        with self._register_lock:
            if registry in self._registries:
                return
            try:
                registry.register(self)
            except ValueError as exc:
                raise ConfigurationError(f"cannot register the asyncjobs metrics: {exc}") from exc
            self._registries.add(registry)

    def unregister(self, registry: CollectorRegistry = prometheus_client.REGISTRY) -> None:
        """Remove these metrics from a registry they were registered with; otherwise do nothing."""
        with self._register_lock:
            if registry in self._registries:
                registry.unregister(self)
                self._registries.discard(registry)


METRICS: Final = Metrics()
"""The process-wide metrics that the client, worker, scheduler and elections update."""


def register(registry: CollectorRegistry = prometheus_client.REGISTRY) -> None:
    """Register :data:`METRICS` with a registry (the default global one when omitted); idempotent.

    Raises:
        ConfigurationError: another collector already exports one of the names.
    """
    METRICS.register(registry)
