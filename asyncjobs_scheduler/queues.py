"""Enqueueing on the queue a schedule names, which need not be the queue of the scheduler's client.

A client is bound to one queue, so a schedule on another queue is fired through a client for that queue on the same
NATS connection (bound only: a queue that does not exist is refused, never created), made once and kept.
"""

from __future__ import annotations

from typing import Any

import asyncjobs


def shared_options(client: asyncjobs.Client) -> dict[str, Any]:
    """The options a client for another queue on the same connection keeps from ``client``."""
    opts = client.options
    return {
        "api_prefix": opts.api_prefix,
        "request_timeout": opts.request_timeout,
        "retry_window": opts.retry_window,
        "signing_seed": opts.signing_seed,
        "signing_seed_file": opts.signing_seed_file,
        "discard": opts.discard,
        "reconcile_interval": None,
    }


class QueueClients:
    """Clients for the queues schedules name, sharing one connection; close them with :meth:`close`.

    Args:
        client: the scheduler's client; its own queue is served by it.
    """

    def __init__(self, client: asyncjobs.Client) -> None:
        self._client = client
        self._others: dict[str, asyncjobs.Client] = {}

    async def get(self, queue: str | None) -> asyncjobs.Client:
        """The client that enqueues on ``queue`` (``None``: the main client's queue).

        Raises:
            QueueNotFound: the queue does not exist.
        """
        if queue is None or queue == self._client.queue.name:
            return self._client
        other = self._others.get(queue)
        if other is None or other.closed:
            other = await asyncjobs.connect(
                self._client.nc, queue=asyncjobs.Queue(queue, no_create=True), **shared_options(self._client)
            )
            self._others[queue] = other
        return other

    async def enqueue(self, task: asyncjobs.Task, queue: str | None) -> asyncjobs.Task:
        """Enqueue ``task`` on ``queue`` (idempotent, as :meth:`asyncjobs.Client.enqueue`).

        Raises:
            QueueNotFound: the queue does not exist.
            EnqueueError: the task could not be enqueued.
        """
        return await (await self.get(queue)).enqueue(task)

    async def close(self) -> None:
        """Close the clients made for other queues (the connection stays the main client's)."""
        others, self._others = list(self._others.values()), {}
        for other in others:
            await other.close()
