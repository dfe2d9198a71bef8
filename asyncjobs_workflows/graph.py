"""A validated definition's graph as plain tuples, computed once per run: children, leaves and a topological order.

:class:`~asyncjobs_workflows.Workflow` answers the same questions through networkx, sorting on each call; the
releaser asks them for every event, so it keeps the answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from asyncjobs_workflows.definition import Workflow

__all__ = ["Graph"]


class Graph:
    """The parent-child structure of a workflow.

    Raises:
        InvalidWorkflow: the workflow is invalid.
    """

    __slots__ = ("children", "index", "leaves", "order", "roots")

    def __init__(self, workflow: Workflow) -> None:
        self.order: tuple[str, ...] = workflow.topological_order()
        """Every step after its parents."""
        position = {name: n for n, name in enumerate(self.order)}
        children: dict[str, list[str]] = {name: [] for name in self.order}
        for step in workflow.steps.values():
            for parent in step.after:
                children[parent].append(step.name)
        self.children: Mapping[str, tuple[str, ...]] = {
            name: tuple(sorted(kids, key=position.__getitem__)) for name, kids in children.items()
        }
        """Each step's children, in topological order."""
        self.roots: tuple[str, ...] = tuple(name for name in self.order if not workflow.steps[name].after)
        self.leaves: tuple[str, ...] = tuple(name for name in self.order if not self.children[name])
        self.index: Mapping[str, int] = {name: n for n, name in enumerate(workflow.steps)}
        """Each step's position in the definition (stable: it names the step in the runs bucket)."""
