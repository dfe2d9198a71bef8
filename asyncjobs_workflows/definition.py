"""Workflow definitions: named steps, each a task template, with dependencies between steps.

A :class:`Workflow` is built step by step in Python or read from a dict, JSON or YAML. :meth:`Workflow.step`
checks each step at once (names, task type, trigger, tries, deadline, payload); :meth:`Workflow.validate` checks
the graph (unknown parents, cycles) with networkx. networkx is imported only when a graph is needed, so importing
:mod:`asyncjobs_workflows` stays cheap and :mod:`asyncjobs` never pulls it in.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from asyncjobs import ConfigurationError
from asyncjobs.names import validate_name
from asyncjobs.task import encode_payload
from asyncjobs_workflows.conditions import Condition, conditions_from
from asyncjobs_workflows.constants import (
    MAX_PARENTS,
    MAX_STEP_NAME_LENGTH,
    MAX_STEPS,
    MAX_WORKFLOW_NAME_LENGTH,
    YAML_EXTRA,
)
from asyncjobs_workflows.errors import InvalidWorkflow

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "MAX_PARENTS",
    "MAX_STEPS",
    "MAX_STEP_NAME_LENGTH",
    "MAX_WORKFLOW_NAME_LENGTH",
    "YAML_EXTRA",
    "Step",
    "Trigger",
    "Workflow",
]


class Trigger(StrEnum):
    """When a step is released, given how its parents ended."""

    ALL_SUCCESS = "all_success"
    """Every parent completed; if one fails or becomes unreachable, the step becomes unreachable (the default)."""
    ALL_DONE = "all_done"
    """Every parent reached a final state, whatever it was: for clean-up and reporting steps."""


@dataclass(frozen=True)
class Step:
    """One step of a workflow: the template of the task each run enqueues for it.

    Built by :meth:`Workflow.step`, which validates every field; build it directly only from validated values.
    """

    name: str
    """The step name, unique in its workflow (the task name rule, ``^[a-zA-Z0-9_:-]+$``)."""
    task_type: str
    """The type of the step's task."""
    payload: bytes | None = None
    """The payload bytes, encoded as :class:`asyncjobs.Task` encodes payloads (bytes kept, else JSON)."""
    after: tuple[str, ...] = ()
    """The names of the steps this step waits for, in the order given."""
    trigger: Trigger = Trigger.ALL_SUCCESS
    """When the step is released, given how its parents ended."""
    max_tries: int | None = None
    """The task's ``max_tries``; ``None`` for the task default."""
    deadline: float | None = None
    """Seconds after the step's release after which its task is not started; ``None`` for no deadline."""
    load_dependencies: bool = False
    """Whether the handler receives the results of the parents' tasks."""
    when: tuple[Condition, ...] = ()
    """Conditions on parents' results; if one is false when the step is released, the step is skipped."""


class Workflow:
    """A named set of steps with dependencies between them.

    Example::

        wf = Workflow("etl")
        wf.step("extract", "etl:extract").step("load", "etl:load", after=["extract"])

    Args:
        name: the workflow name (``^[a-zA-Z0-9_:-]+$``, at most :data:`MAX_WORKFLOW_NAME_LENGTH` characters).

    Raises:
        InvalidWorkflow: the name is invalid.
    """

    def __init__(self, name: str) -> None:
        try:
            self._name = validate_name(name, "workflow name", max_length=MAX_WORKFLOW_NAME_LENGTH)
        except ConfigurationError as exc:
            raise InvalidWorkflow(f"{exc}: pick another workflow name") from exc
        self._steps: dict[str, Step] = {}
        self._graph: nx.DiGraph[str] | None = None

    @property
    def name(self) -> str:
        """The workflow name."""
        return self._name

    @property
    def steps(self) -> Mapping[str, Step]:
        """The steps by name, in the order they were added (a read-only view)."""
        return types.MappingProxyType(self._steps)

    def __repr__(self) -> str:
        return f"Workflow({self._name!r}, steps={list(self._steps)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Workflow):
            return NotImplemented
        return self._name == other._name and list(self._steps.values()) == list(other._steps.values())

    __hash__ = None  # type: ignore[assignment]  # mutable: steps can still be added

    # -- building ----------------------------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        task_type: str,
        payload: Any = None,
        *,
        after: str | Iterable[str] = (),
        trigger: Trigger | str = Trigger.ALL_SUCCESS,
        max_tries: int | None = None,
        deadline: float | timedelta | None = None,
        load_dependencies: bool = False,
        when: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]] | None = None,
    ) -> Workflow:
        """Add a step; returns the workflow itself, so calls chain.

        Parents may be added before or after the steps that name them: they are checked by :meth:`validate`.

        Args:
            name: the step name, unique in the workflow (``^[a-zA-Z0-9_:-]+$``, at most
                :data:`MAX_STEP_NAME_LENGTH` characters).
            task_type: the type of the step's task.
            payload: as :class:`asyncjobs.Task` takes it: bytes as they are, any other JSON value JSON-encoded.
            after: the names of the steps to wait for; a single name may be given as a string.
            trigger: ``all_success`` (default) or ``all_done``.
            max_tries: the task's ``max_tries`` (at least 1), or ``None`` for the task default.
            deadline: seconds (or a ``timedelta``) after the step's release after which its task is not started;
                more than 0, or ``None`` for no deadline.
            load_dependencies: whether the handler receives the parents' results.
            when: a :class:`~asyncjobs_workflows.conditions.Condition` on a parent's result, its dict shape, or a
                list of them, each testing a step in ``after``: if one is false when the step is released, the step
                is skipped, and so are its ``all_success`` children (see :mod:`asyncjobs_workflows.conditions`).

        Returns:
            This workflow.

        Raises:
            InvalidWorkflow: an argument is invalid, the name is taken, or the workflow has :data:`MAX_STEPS` steps.
        """
        where = f"workflow {self._name!r}: step {name!r}"
        step_name = self._checked(name, "step name", where, MAX_STEP_NAME_LENGTH)
        if step_name in self._steps:
            raise InvalidWorkflow(f"{where} is defined twice: give each step a unique name")
        if len(self._steps) >= MAX_STEPS:
            raise InvalidWorkflow(
                f"{where}: the workflow already has {MAX_STEPS} steps, the limit: split it into several workflows"
            )
        try:
            encoded = encode_payload(payload)
        except ConfigurationError as exc:
            raise InvalidWorkflow(f"{where}: {exc}") from exc
        parents = self._checked_after(after, step_name, where)
        step = Step(
            name=step_name,
            task_type=self._checked(task_type, "task type", where, None),
            payload=encoded,
            after=parents,
            trigger=_trigger(trigger, where),
            max_tries=_max_tries(max_tries, where),
            deadline=_deadline(deadline, where),
            load_dependencies=_flag(load_dependencies, where),
            when=conditions_from(when, where, parents=parents),
        )
        self._steps[step_name] = step
        self._graph = None
        return self

    @staticmethod
    def _checked(value: Any, what: str, where: str, max_length: int | None) -> str:
        try:
            return validate_name(value, what, max_length=max_length)
        except ConfigurationError as exc:
            raise InvalidWorkflow(f"{where}: {exc}") from exc

    def _checked_after(self, after: Any, name: str, where: str) -> tuple[str, ...]:
        if isinstance(after, str):
            after = (after,)
        elif not isinstance(after, Iterable) or isinstance(after, bytes | Mapping):
            raise InvalidWorkflow(f"{where}: after= must be a list of step names, not {type(after).__name__}")
        parents = tuple(self._checked(parent, "parent step name", where, MAX_STEP_NAME_LENGTH) for parent in after)
        if name in parents:
            raise InvalidWorkflow(f"{where} depends on itself: remove {name!r} from after=")
        if len(set(parents)) != len(parents):
            twice = sorted({parent for parent in parents if parents.count(parent) > 1})
            raise InvalidWorkflow(f"{where} names {', '.join(map(repr, twice))} twice in after=: name each step once")
        if len(parents) > MAX_PARENTS:
            raise InvalidWorkflow(
                f"{where} waits for {len(parents)} steps, over the limit of {MAX_PARENTS}: "
                "add intermediate fan-in steps"
            )
        return parents

    # -- reading and writing -----------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        """Build and validate a workflow from ``{"name": ..., "steps": [{"name": ..., "task_type": ...}, ...]}``.

        Each step may also have ``payload`` (a JSON value) or ``payload_base64`` (raw bytes, standard base64),
        ``after``, ``trigger``, ``max_tries``, ``deadline`` (seconds), ``load_dependencies`` and ``when``.

        Raises:
            InvalidWorkflow: the data has the wrong shape or the workflow is invalid.
        """
        from asyncjobs_workflows.codec import workflow_from_dict  # the codec builds on this module

        return workflow_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Workflow:
        """Build and validate a workflow from a JSON document of the :meth:`from_dict` shape.

        Raises:
            InvalidWorkflow: the text is not JSON, or the workflow is invalid.
        """
        from asyncjobs_workflows.codec import load_json

        return cls.from_dict(load_json(text))

    @classmethod
    def from_yaml(cls, text: str) -> Workflow:
        """Build and validate a workflow from a YAML document of the :meth:`from_dict` shape.

        Needs PyYAML: ``pip install 'asyncjobs[workflows-yaml]'``.

        Raises:
            InvalidWorkflow: PyYAML is not installed, the text is not YAML, or the workflow is invalid.
        """
        from asyncjobs_workflows.codec import load_yaml

        return cls.from_dict(load_yaml(text))

    def to_dict(self) -> dict[str, Any]:
        """The definition in the :meth:`from_dict` shape, leaving out fields at their defaults; JSON-serialisable.

        A payload is written as its JSON value when its bytes are compact JSON, else as ``payload_base64``.
        """
        from asyncjobs_workflows.codec import step_to_dict

        return {"name": self._name, "steps": [step_to_dict(step) for step in self._steps.values()]}

    # -- the graph ---------------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the whole definition: at least one step, every parent defined, no cycle.

        A non-empty workflow without a cycle always has a root, so the cycle check also guarantees one.

        Raises:
            InvalidWorkflow: the first problem found; a cycle is named step by step.
        """
        self._dag()

    def roots(self) -> tuple[str, ...]:
        """The steps that wait for no other step, in definition order.

        Raises:
            InvalidWorkflow: the workflow is invalid.
        """
        self._dag()
        return tuple(name for name, step in self._steps.items() if not step.after)

    def topological_order(self) -> tuple[str, ...]:
        """Every step after all its parents; steps free to go in either order are sorted by name.

        Raises:
            InvalidWorkflow: the workflow is invalid.
        """
        import networkx as nx

        return tuple(nx.lexicographical_topological_sort(self._dag()))

    def parents(self, step: str) -> tuple[str, ...]:
        """The steps ``step`` waits for, as given in its ``after``.

        Raises:
            KeyError: no such step.
        """
        return self._step(step).after

    def children(self, step: str) -> tuple[str, ...]:
        """The steps that wait for ``step``, in topological order.

        Raises:
            KeyError: no such step.
            InvalidWorkflow: the workflow is invalid.
        """
        self._step(step)
        return self._in_order(set(self._dag().successors(step)))

    def descendants(self, step: str) -> tuple[str, ...]:
        """Every step that waits for ``step`` directly or through others, in topological order.

        Raises:
            KeyError: no such step.
            InvalidWorkflow: the workflow is invalid.
        """
        import networkx as nx

        self._step(step)
        return self._in_order(nx.descendants(self._dag(), step))

    def _in_order(self, names: set[str]) -> tuple[str, ...]:
        return tuple(name for name in self.topological_order() if name in names)

    def _step(self, name: str) -> Step:
        try:
            return self._steps[name]
        except KeyError:
            raise KeyError(f"workflow {self._name!r} has no step {name!r}") from None

    def _dag(self) -> nx.DiGraph[str]:
        """The validated graph, parent to child; cached until a step is added."""
        if self._graph is not None:
            return self._graph
        import networkx as nx

        if not self._steps:
            raise InvalidWorkflow(f"workflow {self._name!r} has no steps: add at least one with step()")
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self._steps)
        for step in self._steps.values():
            for parent in step.after:
                if parent not in self._steps:
                    raise InvalidWorkflow(
                        f"workflow {self._name!r}: step {step.name!r} depends on unknown step {parent!r}: "
                        f"add a step named {parent!r} or remove it from after="
                    )
                graph.add_edge(parent, step.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            self._graph = graph
            return graph
        path = " -> ".join(repr(edge[0]) for edge in cycle) + f" -> {cycle[0][0]!r}"
        raise InvalidWorkflow(
            f"workflow {self._name!r} has a cycle: {path} (each waits for the one before it): "
            "remove one of these dependencies from after="
        )


def _trigger(value: Any, where: str) -> Trigger:
    try:
        return Trigger(value)
    except ValueError:
        choices = " or ".join(repr(trigger.value) for trigger in Trigger)
        raise InvalidWorkflow(f"{where}: trigger {value!r} is not known: use {choices}") from None


def _max_tries(value: Any, where: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidWorkflow(
            f"{where}: max_tries must be a whole number of at least 1, or None for the task default, not {value!r}"
        )
    return value


def _deadline(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidWorkflow(
            f"{where}: deadline must be seconds as a number or a timedelta, or None, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidWorkflow(
            f"{where}: deadline must be a finite number of seconds above 0, not {value!r}: or None for no deadline"
        )
    return seconds


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidWorkflow(f"{where}: load_dependencies must be True or False, not {value!r}")
    return value
