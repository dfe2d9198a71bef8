"""Dependency-graph pipelines (workflows) for asyncjobs.

A workflow is a set of named steps, each a task template, with dependencies between steps; it is built in Python
(:class:`Workflow`) or read from a dict, JSON or YAML, and validated before anything is stored. Drawings come from
:mod:`asyncjobs_workflows.render`. Submitting a workflow and releasing its steps as tasks come next. This package
depends on :mod:`asyncjobs` only, and :mod:`asyncjobs` never imports it.
"""

from asyncjobs_workflows.definition import Step, Trigger, Workflow
from asyncjobs_workflows.errors import InvalidWorkflow, WorkflowError, WorkflowNotFound

__all__ = ["InvalidWorkflow", "Step", "Trigger", "Workflow", "WorkflowError", "WorkflowNotFound"]
