"""When a step may run, given how its parents ended: the trigger rules as a small, pure state machine.

The releaser reads parents one at a time and stops as soon as the answer is known, so :class:`Scan` takes them one
by one and says when to stop:

====================  ==========================================  ======================================
trigger               parents                                     verdict
====================  ==========================================  ======================================
``all_success``       one failed (expired, terminated, ...)       ``UNREACHABLE``, at once
``all_success``       one not final yet                           ``WAIT``
``all_success``       all final, one skipped, none failed         ``SKIP``
``all_success``       all complete                                ``RUN`` (if its conditions hold)
``all_done``          one not final yet                           ``WAIT``
``all_done``          all final, whatever they are                ``RUN`` (if its conditions hold)
====================  ==========================================  ======================================
"""

from __future__ import annotations

from enum import Enum

from asyncjobs_workflows.definition import Trigger
from asyncjobs_workflows.status import Outcome

__all__ = ["Scan", "Verdict"]


class Verdict(Enum):
    """What happens to a blocked step."""

    WAIT = "wait"
    """A parent is not final yet (or the step was decided already)."""
    RUN = "run"
    """Release it (its conditions, if any, are checked next: false ones skip it)."""
    SKIP = "skip"
    """It never runs: a parent was skipped (``all_success``) or a condition is false."""
    UNREACHABLE = "unreachable"
    """It never runs: a parent failed (``all_success``)."""
    DECIDED = "decided"
    """Nothing to do: the step is no longer blocked (decided before, or brought back by nobody yet)."""
    PASSED = "passed"
    """Nothing to do here: a decision on the step already under way in this process takes this request over."""


class Scan:
    """Collects the outcomes of a step's parents, one at a time, into a :class:`Verdict`.

    Args:
        trigger: the step's trigger rule.
    """

    __slots__ = ("failed", "pending", "skipped", "trigger")

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.failed: str | None = None
        """The failed parent that makes an ``all_success`` step unreachable."""
        self.skipped: str | None = None
        """The first skipped parent seen."""
        self.pending = False

    def add(self, parent: str, outcome: Outcome) -> bool:
        """Take one parent's outcome; returns whether the next parent is still worth reading."""
        if outcome is Outcome.PENDING:
            self.pending = True
            return False
        if outcome is Outcome.FAILED and self.trigger is Trigger.ALL_SUCCESS:
            self.failed = parent
            return False
        if outcome is Outcome.SKIPPED and self.skipped is None:
            self.skipped = parent
        return True

    @property
    def cause(self) -> str | None:
        """The parent behind an ``UNREACHABLE`` or ``SKIP`` verdict, else ``None``."""
        if self.trigger is Trigger.ALL_DONE:
            return None
        return self.failed or self.skipped

    def verdict(self) -> Verdict:
        """The verdict from the parents taken so far."""
        if self.failed is not None:
            return Verdict.UNREACHABLE
        if self.pending:
            return Verdict.WAIT
        if self.skipped is not None and self.trigger is Trigger.ALL_SUCCESS:
            return Verdict.SKIP
        return Verdict.RUN
