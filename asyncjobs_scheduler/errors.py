"""The errors of the scheduler extension.

They hang under the core tree's root, so ``except asyncjobs.AsyncJobsError`` also catches them::

    AsyncJobsError
    └── SchedulerError                       root of the scheduler extension's errors
        ├── InvalidSchedule (ValueError)     a schedule argument is invalid: bad spec, zone, name, policy, ...
        ├── ScheduleNotFound (LookupError)   no schedule is stored under that name
        └── ScheduleExists                   a schedule with that name is already stored
"""

from __future__ import annotations

from asyncjobs import AsyncJobsError

__all__ = ["InvalidSchedule", "ScheduleExists", "ScheduleNotFound", "SchedulerError"]


class SchedulerError(AsyncJobsError):
    """Root of every error raised by :mod:`asyncjobs_scheduler`."""


class InvalidSchedule(SchedulerError, ValueError):
    """A schedule argument is invalid; the message says which one, what is wrong and how to fix it."""


class ScheduleNotFound(SchedulerError, LookupError):
    """No schedule is stored under the requested name."""


class ScheduleExists(SchedulerError):
    """A schedule with that name is already stored: remove it first, or update it instead."""
