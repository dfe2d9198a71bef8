"""The handler logs of the fault runs: which task each worker process started and finished, and when.

Each worker process appends ``start <id> <unix ns>``, ``done <id> <unix ns>`` and ``ready <unix ns>`` lines to its
own file (see ``bench/fault_worker.py``). :class:`Ledger` tails every file while the run goes on and answers the
questions of the report: how many distinct tasks a handler finished, which tasks ran more than once, and which
were in flight in a process when it was killed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path


class ProcessLog:
    """The handler log of one worker process, read incrementally.

    Args:
        path: the file the process appends to (it need not exist yet).
        label: a name for reports, like ``worker-1``.
    """

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.starts: defaultdict[str, list[int]] = defaultdict(list)
        self.dones: defaultdict[str, list[int]] = defaultdict(list)
        self.ready_ns: int | None = None
        self._offset = 0
        self._partial = b""

    def refresh(self) -> None:
        """Read the lines appended since the last call (a line still being written waits for the next call)."""
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                chunk = file.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            fields = raw.decode(errors="replace").split()
            if len(fields) == 2 and fields[0] == "ready" and fields[1].isdigit():
                self.ready_ns = int(fields[1])
            elif len(fields) == 3 and fields[0] in ("start", "done") and fields[2].isdigit():
                (self.starts if fields[0] == "start" else self.dones)[fields[1]].append(int(fields[2]))

    def in_flight(self) -> set[str]:
        """Tasks whose handler this process started more often than it finished."""
        return {task_id for task_id, times in self.starts.items() if len(times) > len(self.dones.get(task_id, ()))}


class Ledger:
    """Every worker process's handler log, and what they add up to."""

    def __init__(self) -> None:
        self.logs: list[ProcessLog] = []

    def add(self, path: Path, label: str) -> ProcessLog:
        log = ProcessLog(path, label)
        self.logs.append(log)
        return log

    def refresh(self) -> None:
        """Read what every process appended since the last call."""
        for log in self.logs:
            log.refresh()

    def done_ids(self) -> set[str]:
        """Tasks some handler finished at least once, as of the last :meth:`refresh`."""
        return set().union(*(log.dones.keys() for log in self.logs))

    def _counts(self, done: bool) -> Counter[str]:
        counts: Counter[str] = Counter()
        for log in self.logs:
            for task_id, times in (log.dones if done else log.starts).items():
                counts[task_id] += len(times)
        return counts

    def duplicate_starts(self) -> set[str]:
        """Tasks whose handler started more than once, in any processes."""
        return {task_id for task_id, n in self._counts(done=False).items() if n > 1}

    def duplicate_completions(self) -> set[str]:
        """Tasks whose handler finished (returned) more than once, in any processes."""
        return {task_id for task_id, n in self._counts(done=True).items() if n > 1}

    def first_done_ns(self, task_id: str) -> int | None:
        """When a handler first finished the task (unix ns), if ever."""
        times = [t for log in self.logs for t in log.dones.get(task_id, ())]
        return min(times) if times else None
