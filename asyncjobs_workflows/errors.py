"""The errors of the workflows extension.

They hang under the core tree's root, so ``except asyncjobs.AsyncJobsError`` also catches them::

    AsyncJobsError
    └── WorkflowError                        root of the workflows extension's errors
        ├── InvalidWorkflow (ValueError)     a definition is invalid: bad name, unknown parent, cycle, limit, ...
        └── WorkflowNotFound (LookupError)   no workflow is stored under that name
"""

from __future__ import annotations

from asyncjobs import AsyncJobsError

__all__ = ["InvalidWorkflow", "WorkflowError", "WorkflowNotFound"]


class WorkflowError(AsyncJobsError):
    """Root of every error raised by :mod:`asyncjobs_workflows`."""


class InvalidWorkflow(WorkflowError, ValueError):
    """A workflow definition is invalid; the message names the workflow and step, what is wrong and how to fix it."""


class WorkflowNotFound(WorkflowError, LookupError):
    """No workflow is stored under the requested name."""
