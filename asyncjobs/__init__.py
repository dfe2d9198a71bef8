"""asyncjobs: a durable asyncio job queue on NATS JetStream, wire-compatible with Choria Async Jobs (Go).

Quick use::

    client = await asyncjobs.connect("nats://127.0.0.1:4222", queue="EMAIL")
    await client.enqueue(asyncjobs.Task("email:new", {"to": "user@example.net"}))

    router = asyncjobs.Router()


    @router.handler("email:new")
    async def send(task: asyncjobs.Task) -> str:
        return "sent"


    await client.run(router)
"""

from asyncjobs.admin import Admin, QueueInfo, TaskStoreInfo
from asyncjobs.client import Client
from asyncjobs.codec import Event, LeaderElectedEvent, TaskStateEvent
from asyncjobs.connecting import connect
from asyncjobs.errors import (
    AsyncJobsError,
    ClientClosedError,
    ConfigurationError,
    CorruptDataError,
    DependenciesFailed,
    DuplicateHandlerError,
    DuplicateTaskError,
    EnqueueError,
    HandlerNotSupported,
    InvalidNameError,
    InvalidSignature,
    InvalidTaskStateError,
    JetStreamError,
    JetStreamUnavailable,
    NoHandlerError,
    QueueConsumerNotFound,
    QueueNotFound,
    RemoteHandlerError,
    RequestTimeout,
    SignatureError,
    TaskConflict,
    TaskNotFound,
    TaskNotSigned,
    TaskTimeout,
    TerminateTask,
    WaitTimeout,
)
from asyncjobs.eventfeed import EventFeed, FeedItem
from asyncjobs.events import EventStream
from asyncjobs.options import ClientOptions
from asyncjobs.queue import Queue
from asyncjobs.remote import ExternalCommand, RequestReplyHandler, serve_remote_handler
from asyncjobs.retry import (
    RETRY_DEFAULT,
    RETRY_LINEAR_ONE_HOUR,
    RETRY_LINEAR_ONE_MINUTE,
    RETRY_LINEAR_TEN_MINUTES,
    ExponentialPolicy,
    LinearPolicy,
    RetryPolicy,
    lookup_retry_policy,
    retry_policy_names,
)
from asyncjobs.router import Handler, Middleware, Router, chain
from asyncjobs.runner import run_worker, run_worker_async
from asyncjobs.staged import StagedTasks
from asyncjobs.task import (
    DISCARDABLE_STATES,
    ENQUEUEABLE_STATES,
    FAILED_STATES,
    TERMINAL_STATES,
    Task,
    TaskResult,
    TaskState,
)

__all__ = [
    "DISCARDABLE_STATES",
    "ENQUEUEABLE_STATES",
    "FAILED_STATES",
    "RETRY_DEFAULT",
    "RETRY_LINEAR_ONE_HOUR",
    "RETRY_LINEAR_ONE_MINUTE",
    "RETRY_LINEAR_TEN_MINUTES",
    "TERMINAL_STATES",
    "Admin",
    "AsyncJobsError",
    "Client",
    "ClientClosedError",
    "ClientOptions",
    "ConfigurationError",
    "CorruptDataError",
    "DependenciesFailed",
    "DuplicateHandlerError",
    "DuplicateTaskError",
    "EnqueueError",
    "Event",
    "EventFeed",
    "EventStream",
    "ExponentialPolicy",
    "ExternalCommand",
    "FeedItem",
    "Handler",
    "HandlerNotSupported",
    "InvalidNameError",
    "InvalidSignature",
    "InvalidTaskStateError",
    "JetStreamError",
    "JetStreamUnavailable",
    "LeaderElectedEvent",
    "LinearPolicy",
    "Middleware",
    "NoHandlerError",
    "Queue",
    "QueueConsumerNotFound",
    "QueueInfo",
    "QueueNotFound",
    "RemoteHandlerError",
    "RequestReplyHandler",
    "RequestTimeout",
    "RetryPolicy",
    "Router",
    "SignatureError",
    "StagedTasks",
    "Task",
    "TaskConflict",
    "TaskNotFound",
    "TaskNotSigned",
    "TaskResult",
    "TaskState",
    "TaskStateEvent",
    "TaskStoreInfo",
    "TaskTimeout",
    "TerminateTask",
    "WaitTimeout",
    "chain",
    "connect",
    "lookup_retry_policy",
    "retry_policy_names",
    "run_worker",
    "run_worker_async",
    "serve_remote_handler",
]
