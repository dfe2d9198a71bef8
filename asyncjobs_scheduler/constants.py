"""Wire names, policy names and defaults of the scheduler extension.

The configuration bucket and the elections bucket are the core's (:mod:`asyncjobs.constants`); the keys inside them
that belong to the scheduler are spelled here once (docs/protocol.md, Scheduled tasks and Configuration bucket keys).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from asyncjobs.constants import CONFIG_BUCKET, DEFAULT_MAX_TRIES, ELECTIONS_BUCKET

__all__ = [
    "CONFIG_BUCKET",
    "DEFAULT_CATCHUP_WINDOW_S",
    "DEFAULT_DST_GAP",
    "DEFAULT_DST_OVERLAP",
    "DEFAULT_MAX_TRIES",
    "DEFAULT_MISFIRE",
    "DEFAULT_OVERLAP",
    "DEFAULT_TIMEZONE",
    "ELECTIONS_BUCKET",
    "ELECTION_KEY",
    "FIRED_KEY_PREFIX",
    "MAX_SCHEDULE_NAME_LENGTH",
    "MIN_DEADLINE_S",
    "SCHEDULE_KEY_PREFIX",
    "TASK_ID_TIME_FORMAT",
    "DstGap",
    "DstOverlap",
    "Misfire",
    "Overlap",
]

# Keys (docs/protocol.md, Configuration bucket keys).
SCHEDULE_KEY_PREFIX: Final = "scheduled_tasks."
"""A schedule is the value of ``scheduled_tasks.<name>`` in the configuration bucket, as Go stores it."""
ELECTION_KEY: Final = "task_scheduler"
"""The key the schedulers campaign for in the elections bucket; also the leader event's component."""
FIRED_KEY_PREFIX: Final = "scheduler_fired."
"""Ours: ``scheduler_fired.<name>`` holds the last due time fired for a schedule. Go's scheduler ignores it."""

# ScheduledTask JSON keys: Go's fields in Go's order, then ours (Go ignores unknown fields).
KEY_NAME: Final = "name"
KEY_SCHEDULE: Final = "schedule"
KEY_QUEUE: Final = "queue"
KEY_TASK_TYPE: Final = "task_type"
KEY_PAYLOAD: Final = "payload"
KEY_DEADLINE: Final = "deadline"
KEY_MAX_TRIES: Final = "max_tries"
KEY_CREATED_AT: Final = "created_at"
KEY_MISFIRE: Final = "misfire"
KEY_CATCHUP_WINDOW: Final = "catchup_window"
KEY_DST_GAP: Final = "dst_gap"
KEY_DST_OVERLAP: Final = "dst_overlap"
KEY_OVERLAP: Final = "overlap"
KEY_JITTER: Final = "jitter"
KEY_PAUSED: Final = "paused"

# The spec prefixes Go's cron parser reads; we write CRON_TZ=.
CRON_TZ_PREFIX: Final = "CRON_TZ="
TZ_PREFIX: Final = "TZ="


class Misfire(StrEnum):
    """What to do with due times missed while no scheduler was leading."""

    SKIP = "skip"
    """Fire nothing for missed due times (Go's behaviour)."""
    RUN_ONCE = "run_once"
    """Fire one task, for the latest missed due time within the catch-up window."""
    RUN_ALL = "run_all"
    """Fire one task for every missed due time within the catch-up window."""


class DstGap(StrEnum):
    """What a schedule naming fixed hours does with a local time that a DST change skips."""

    SHIFT = "shift"
    """Fire at the first valid instant after the gap."""
    SKIP = "skip"
    """Do not fire that day."""


class DstOverlap(StrEnum):
    """What a schedule naming fixed hours does with a local time that a DST change repeats."""

    ONCE = "once"
    """Fire at the first occurrence only."""
    TWICE = "twice"
    """Fire at both occurrences."""


class Overlap(StrEnum):
    """Whether a schedule fires while its previous task has not reached a final state."""

    ALLOW = "allow"
    """Always fire."""
    SKIP = "skip"
    """Skip a due time while the previous task of the schedule is not in a final state."""


DEFAULT_TIMEZONE: Final = "UTC"
DEFAULT_MISFIRE: Final = Misfire.RUN_ONCE
DEFAULT_CATCHUP_WINDOW_S: Final = 3600
DEFAULT_DST_GAP: Final = DstGap.SHIFT
DEFAULT_DST_OVERLAP: Final = DstOverlap.ONCE
DEFAULT_OVERLAP: Final = Overlap.ALLOW

MIN_DEADLINE_S: Final = 30
"""Go refuses a schedule whose task deadline is under 30 seconds."""
MAX_SCHEDULE_NAME_LENGTH: Final = 255
"""Ours (Go checks only the characters): the name travels in a KV key and in every task id the schedule makes."""
TASK_ID_TIME_FORMAT: Final = "%Y%m%dT%H%M%SZ"
"""The due time in a scheduled task's id, ``<name>:<due>``, in UTC."""
