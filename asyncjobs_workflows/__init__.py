"""Dependency-graph pipelines (workflows) for asyncjobs.

A workflow is a set of named steps, each a task template, with dependencies between steps; it is built in Python
(:class:`Workflow`) or read from a dict, JSON or YAML, and validated before anything is stored. :class:`Workflows`
submits runs, whose steps run as tasks on an asyncjobs queue, releases each step the moment its parents end, and
reports on and controls runs. This package depends on :mod:`asyncjobs` only, and :mod:`asyncjobs` never imports it.
"""

from asyncjobs_workflows.conditions import Condition
from asyncjobs_workflows.definition import Step, Trigger, Workflow
from asyncjobs_workflows.errors import (
    DuplicateRun,
    InvalidWorkflow,
    RunStateError,
    WorkflowError,
    WorkflowNotFound,
)
from asyncjobs_workflows.record import RunState
from asyncjobs_workflows.runevents import RunEvent, RunEvents
from asyncjobs_workflows.status import StepStatus, WorkflowRun
from asyncjobs_workflows.workflows import Workflows

__all__ = [
    "Condition",
    "DuplicateRun",
    "InvalidWorkflow",
    "RunEvent",
    "RunEvents",
    "RunState",
    "RunStateError",
    "Step",
    "StepStatus",
    "Trigger",
    "Workflow",
    "WorkflowError",
    "WorkflowNotFound",
    "WorkflowRun",
    "Workflows",
]
