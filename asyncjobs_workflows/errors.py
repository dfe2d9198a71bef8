"""The errors of the workflows extension.

They hang under the core tree's root, so ``except asyncjobs.AsyncJobsError`` also catches them::

    AsyncJobsError
    └── WorkflowError                        root of the workflows extension's errors
        ├── InvalidWorkflow (ValueError)     a definition is invalid: bad name, unknown parent, cycle, limit, ...
        ├── WorkflowNotFound (LookupError)   no workflow run has that id
        ├── DuplicateRun                     a run with that id exists with another definition or queue
        └── RunStateError                    the run is not in a state that allows the call (retry a running run)
"""

from __future__ import annotations

from asyncjobs import AsyncJobsError

__all__ = ["DuplicateRun", "InvalidWorkflow", "RunStateError", "WorkflowError", "WorkflowNotFound"]


class WorkflowError(AsyncJobsError):
    """Root of every error raised by :mod:`asyncjobs_workflows`."""


class InvalidWorkflow(WorkflowError, ValueError):
    """A workflow definition is invalid; the message names the workflow and step, what is wrong and how to fix it."""


class WorkflowNotFound(WorkflowError, LookupError):
    """No workflow run has the requested id."""


class DuplicateRun(WorkflowError):
    """A run with that id exists, submitted with another definition or on another queue."""


class RunStateError(WorkflowError):
    """The run's state does not allow the call: retrying a run that is still running or that completed."""
