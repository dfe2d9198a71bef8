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

# The names load on first use (PEP 562): ``python -m asyncjobs worker --processes N`` runs its supervisor from this
# package without nats-py, asyncio or prometheus_client, which would cost it some 20 MB. Type checkers see the
# imports below; the ``__getattr__`` at the end makes them at run time, from ``_EXPORTS`` (a test keeps the two equal).
import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from asyncjobs.admin import Admin
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
        PermissionDenied,
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
    from asyncjobs.storeinfo import BucketInfo, QueueInfo, TaskStoreInfo
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
    "BucketInfo",
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
    "PermissionDenied",
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

_EXPORTS: _typing.Final[dict[str, tuple[str, ...]]] = {
    "asyncjobs.admin": ("Admin",),
    "asyncjobs.client": ("Client",),
    "asyncjobs.codec": ("Event", "LeaderElectedEvent", "TaskStateEvent"),
    "asyncjobs.connecting": ("connect",),
    "asyncjobs.errors": (
        "AsyncJobsError",
        "ClientClosedError",
        "ConfigurationError",
        "CorruptDataError",
        "DependenciesFailed",
        "DuplicateHandlerError",
        "DuplicateTaskError",
        "EnqueueError",
        "HandlerNotSupported",
        "InvalidNameError",
        "InvalidSignature",
        "InvalidTaskStateError",
        "JetStreamError",
        "JetStreamUnavailable",
        "NoHandlerError",
        "PermissionDenied",
        "QueueConsumerNotFound",
        "QueueNotFound",
        "RemoteHandlerError",
        "RequestTimeout",
        "SignatureError",
        "TaskConflict",
        "TaskNotFound",
        "TaskNotSigned",
        "TaskTimeout",
        "TerminateTask",
        "WaitTimeout",
    ),
    "asyncjobs.eventfeed": ("EventFeed", "FeedItem"),
    "asyncjobs.events": ("EventStream",),
    "asyncjobs.options": ("ClientOptions",),
    "asyncjobs.queue": ("Queue",),
    "asyncjobs.remote": ("ExternalCommand", "RequestReplyHandler", "serve_remote_handler"),
    "asyncjobs.retry": (
        "RETRY_DEFAULT",
        "RETRY_LINEAR_ONE_HOUR",
        "RETRY_LINEAR_ONE_MINUTE",
        "RETRY_LINEAR_TEN_MINUTES",
        "ExponentialPolicy",
        "LinearPolicy",
        "RetryPolicy",
        "lookup_retry_policy",
        "retry_policy_names",
    ),
    "asyncjobs.router": ("Handler", "Middleware", "Router", "chain"),
    "asyncjobs.runner": ("run_worker", "run_worker_async"),
    "asyncjobs.staged": ("StagedTasks",),
    "asyncjobs.storeinfo": ("BucketInfo", "QueueInfo", "TaskStoreInfo"),
    "asyncjobs.task": (
        "DISCARDABLE_STATES",
        "ENQUEUEABLE_STATES",
        "FAILED_STATES",
        "TERMINAL_STATES",
        "Task",
        "TaskResult",
        "TaskState",
    ),
}
_SOURCES: _typing.Final = {name: module for module, names in _EXPORTS.items() for name in names}

if not _typing.TYPE_CHECKING:  # seen by mypy, a module __getattr__ would let any misspelt name type-check

    def __getattr__(name: str) -> object:
        module = _SOURCES.get(name)
        if module is not None:
            value = getattr(_import_module(module), name)
        elif name.startswith("__"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        else:
            # A submodule: after `import asyncjobs`, `asyncjobs.codec.safe_text(...)` works as with eager imports.
            try:
                value = _import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
