"""asyncjobs_scheduler: a highly available cron scheduler for asyncjobs, on NATS JetStream alone.

Schedules are stored in ``CHORIA_AJ_CONFIGURATION`` as the ScheduledTask JSON the Go implementation reads; any number
of :class:`Scheduler` instances (Go's among them) elect one leader that fires them, one task per due time::

    client = await asyncjobs.connect("nats://127.0.0.1:4222", queue="REPORTS")
    await Schedules(client).add(Schedule("nightly", "0 2 * * *", "report:nightly", timezone="Europe/London"))
    await Scheduler(client).run()

Depends on :mod:`asyncjobs` only; ``import asyncjobs`` alone never imports it.
"""

from asyncjobs_scheduler.clock import Clock, ManualClock, SystemClock
from asyncjobs_scheduler.constants import DstGap, DstOverlap, Misfire, Overlap
from asyncjobs_scheduler.election import Election, ElectionState
from asyncjobs_scheduler.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound, SchedulerError
from asyncjobs_scheduler.schedule import Schedule
from asyncjobs_scheduler.scheduler import Scheduler
from asyncjobs_scheduler.schedules import Schedules

__all__ = [
    "Clock",
    "DstGap",
    "DstOverlap",
    "Election",
    "ElectionState",
    "InvalidSchedule",
    "ManualClock",
    "Misfire",
    "Overlap",
    "Schedule",
    "ScheduleExists",
    "ScheduleNotFound",
    "Scheduler",
    "SchedulerError",
    "Schedules",
    "SystemClock",
]
