"""Stopping steps of a cancelled run, and catching releases that raced the cancel.

Go workers run a work item whatever its task's state, so a cancelled step must lose its item, not only be stored
``terminated``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asyncjobs import TaskConflict, TaskState
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows.constants import CANCELLED_ERROR, DECIDE_ATTEMPTS
from asyncjobs_workflows.record import RunRecord, RunState
from asyncjobs_workflows.status import is_cancelled

if TYPE_CHECKING:
    from asyncjobs_workflows.engine import Engine

__all__ = ["cancel_step", "recheck_cancel"]


async def cancel_step(engine: Engine, run_id: str, name: str) -> bool:
    """Stop a step that has not started: store it ``terminated`` (marked cancelled) and withdraw its item.

    The item is withdrawn before and after the write: a release that published it in between is caught by the
    second withdraw (or by the releaser's own check of the run after it published). Go workers run an item
    whatever its task's state, so the item must go. A step cancelled already has any item it still has
    withdrawn again.

    Returns:
        Whether this call stopped the step.
    """
    for _ in range(DECIDE_ATTEMPTS):
        task = await engine.load_task(run_id, name)
        if task is None:
            return False
        if task.state not in (TaskState.BLOCKED, TaskState.NEW, TaskState.RETRY):
            if task.queue and is_cancelled(task):
                await engine.client.staged.withdraw(task.id, queue=task.queue)
            return False
        if task.queue:
            await engine.client.staged.withdraw(task.id, queue=task.queue)
        task.state = TaskState.TERMINATED
        task.last_err = CANCELLED_ERROR
        task.tried_at = WireTime.now()
        try:
            await engine.client.staged.update(task)
        except TaskConflict:
            continue
        if task.queue:
            await engine.client.staged.withdraw(task.id, queue=task.queue)
        return True
    return False


async def recheck_cancel(engine: Engine, record: RunRecord, released: list[str]) -> None:
    """After releasing steps: if the run was cancelled meanwhile (after we read it), stop them again.

    The cancel stores the run first, then stops steps; a step released after the cancel looked at it would
    otherwise keep its work item, which a Go worker runs whatever the task's state.
    """
    if not released:
        return
    current = await engine.load_record(record.id)
    if current is not None and current.state is RunState.CANCELLED:
        for name in released:
            await cancel_step(engine, record.id, name)
