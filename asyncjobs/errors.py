"""The error tree of asyncjobs.

Every error raised by the library derives from :class:`AsyncJobsError`::

    AsyncJobsError
    ├── ConfigurationError (ValueError)      an option or argument is invalid
    │   └── InvalidNameError                 a task type, task id or queue name breaks the name rule
    ├── ClientClosedError                    the client was closed
    ├── JetStreamError                       JetStream answered with an error we do not map further
    │   ├── QueueNotFound (LookupError)      the work queue stream does not exist
    │   ├── QueueConsumerNotFound (LookupError)
    │   ├── TaskNotFound (LookupError)       no task stored under that id
    │   ├── TaskConflict                     the stored task changed since it was loaded
    │   ├── JetStreamUnavailable             no leader (election, lost quorum), still so after retries
    │   ├── RequestTimeout (TimeoutError)    no reply from NATS in time, still so after retries
    │   └── PermissionDenied (PermissionError) the NATS user may not send a request or receive its reply
    ├── EnqueueError                         the task was stored but its work item was not
    │   └── DuplicateTaskError               the work item was a duplicate (task saved as queue_error)
    ├── InvalidTaskStateError                the operation is not allowed in the task's state
    ├── SignatureError                       a task signature is missing or wrong
    │   ├── TaskNotSigned
    │   └── InvalidSignature
    ├── DuplicateHandlerError                a router already has a handler for that type
    ├── NoHandlerError                       no route matched a task's type
    ├── HandlerNotSupported                  mark_in_progress outside a handler
    ├── RemoteHandlerError                   a request-reply or external-command handler failed
    ├── TaskTimeout (TimeoutError)           a handler ran out of time, or its deadline could not be extended
    ├── WaitTimeout (TimeoutError)           Client.wait() gave up before the task was final
    ├── DependenciesFailed                   a parent task failed, the child is unreachable
    ├── CorruptDataError (ValueError)        stored or received data could not be decoded
    ├── NatsServerError (RuntimeError)       the embedded nats-server failed (asyncjobs.server)
    └── TerminateTask                        raised by a handler: end the task without retries

NATS and JetStream exceptions are translated into this tree in :mod:`asyncjobs.jsapi` only. Transient failures
(timeouts, no leader) are retried there with back-off for the client's ``retry_window`` before one of
:class:`RequestTimeout` or :class:`JetStreamUnavailable` reaches the caller.
"""

from __future__ import annotations

from typing import Final


class AsyncJobsError(Exception):
    """Root of every error raised by asyncjobs."""


class ConfigurationError(AsyncJobsError, ValueError):
    """An option or argument is invalid; the message names it and says how to fix it."""


class InvalidNameError(ConfigurationError):
    """A task type, task id, queue or schedule name does not match ``^[a-zA-Z0-9_:-]+$``."""


class ClientClosedError(AsyncJobsError):
    """The client was closed; create a new one with :func:`asyncjobs.connect`."""


class JetStreamError(AsyncJobsError):
    """JetStream answered a request with an error.

    Attributes:
        code: the HTTP-like status code (``404``, ``400``, ...), 0 when unknown.
        err_code: the JetStream error code (``10059``, ...), 0 when unknown.
        description: the server's description.
    """

    def __init__(self, message: str, *, code: int = 0, err_code: int = 0, description: str = "") -> None:
        super().__init__(message)
        self.code: Final = code
        self.err_code: Final = err_code
        self.description: Final = description
        self.attempts = 1
        """How many times the request was sent before this error was raised (more than 1 after retries)."""


class QueueNotFound(JetStreamError, LookupError):
    """The work queue stream does not exist."""


class QueueConsumerNotFound(JetStreamError, LookupError):
    """The work queue exists but its ``WORKERS`` consumer does not."""


class TaskNotFound(JetStreamError, LookupError):
    """No task is stored under the requested id."""


class TaskConflict(JetStreamError):
    """The stored task changed since this copy was loaded (wrong last subject sequence)."""


class JetStreamUnavailable(JetStreamError):
    """JetStream could not serve the request: a stream or the cluster has no leader (a leader election is under
    way, or the cluster lost quorum), or no server answers for the stream.

    Raised only after the client retried for its ``retry_window``; the outage outlasted it.
    """


class RequestTimeout(JetStreamError, TimeoutError):
    """NATS gave no reply in time, still after retrying for the client's ``retry_window``.

    A timed-out write may still have been stored: the library re-checks before it reports a failure.
    """


class PermissionDenied(JetStreamError, PermissionError):
    """The NATS server refused a request (or its reply) for the user's permissions; retrying cannot help.

    The message names the subject and the permission to grant.
    """


class EnqueueError(AsyncJobsError):
    """The task was stored, but its work queue item could not be published.

    The task is saved in state ``queue_error`` with the reason in ``last_err``.
    """


class DuplicateTaskError(EnqueueError):
    """The work queue item was rejected as a duplicate of one published in the duplicate window."""


class InvalidTaskStateError(AsyncJobsError):
    """The operation is not allowed in the task's current state."""


class SignatureError(AsyncJobsError):
    """A task signature is missing or does not verify."""


class TaskNotSigned(SignatureError):
    """The task has no signature but the client requires one."""


class InvalidSignature(SignatureError):
    """The task's signature does not match its content and the verification key."""


class DuplicateHandlerError(AsyncJobsError):
    """A router already has a handler for that task type."""


class NoHandlerError(AsyncJobsError):
    """No route matched the task's type; the task is retried."""


class HandlerNotSupported(AsyncJobsError):
    """The operation is only valid inside a running handler."""


class RemoteHandlerError(AsyncJobsError):
    """A request-reply or external-command handler failed; the task is retried.

    Attributes:
        output: what a failed external command wrote (standard output and error together), else ``""``.
    """

    def __init__(self, *args: object, output: str = "") -> None:
        super().__init__(*args)
        self.output = output


class TaskTimeout(AsyncJobsError, TimeoutError):
    """A handler ran past its max run time, or ``mark_in_progress`` could not extend its deadline."""


class WaitTimeout(AsyncJobsError, TimeoutError):
    """:meth:`Client.wait` timed out before the task reached a final state."""


class DependenciesFailed(AsyncJobsError):
    """A parent task failed or vanished, so the child can never run."""


class TerminateTask(AsyncJobsError):
    """Raise from a handler to end the task in state ``terminated`` with no further tries.

    The stored ``last_err`` is ``"<message>: terminate task"``, as the Go implementation writes it.
    """

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}: terminate task" if message else "terminate task"


class CorruptDataError(AsyncJobsError, ValueError):
    """Stored or received data could not be decoded (a corrupt task, work item or event)."""
