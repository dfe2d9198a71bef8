"""Wire names shared with the Go implementation (choria-io/asyncjobs).

Every stream, subject, bucket, header and fixed value that appears on the wire is spelled here once.
"""

from __future__ import annotations

from typing import Final

# Streams and subjects (docs/protocol.md, Names).
TASKS_STREAM: Final = "CHORIA_AJ_TASKS"
TASKS_SUBJECTS: Final = "CHORIA_AJ.T.*"
TASK_SUBJECT_PREFIX: Final = "CHORIA_AJ.T."
QUEUE_STREAM_PREFIX: Final = "CHORIA_AJ_Q_"
KV_STREAM_PREFIX: Final = "KV_"
"""A key-value bucket ``B`` is the stream ``KV_B`` (nats.go's layout)."""
QUEUE_SUBJECT_PREFIX: Final = "CHORIA_AJ.Q."
QUEUE_DISCOVERY_SUBJECT: Final = "CHORIA_AJ.Q.>"
QUEUE_CONSUMER: Final = "WORKERS"
EVENTS_SUBJECTS: Final = "CHORIA_AJ.E.>"
TASK_EVENT_PREFIX: Final = "CHORIA_AJ.E.task_state."
TASK_EVENT_WILDCARD: Final = "CHORIA_AJ.E.task_state.*"
LEADER_EVENT_PREFIX: Final = "CHORIA_AJ.E.leader_election."
REQUEST_REPLY_PREFIX: Final = "CHORIA_AJ.H.T."
REQUEST_REPLY_CATCHALL: Final = "catchall"
CONFIG_BUCKET: Final = "CHORIA_AJ_CONFIGURATION"
ELECTIONS_BUCKET: Final = "CHORIA_AJ_ELECTIONS"
ELECTIONS_TTL_NS: Final = 10_000_000_000
# Ours, in the configuration bucket: when a queue was last purged or deleted (Unix ns), so the reconciler tells
# items an operator removed from items a crash lost. Go's scheduler only watches scheduled_tasks.*.
QUEUE_PURGED_KEY_PREFIX: Final = "queue_purged."
# Our addition: an optional stream keeping lifecycle events so they can be replayed. Go ignores it.
EVENTS_STREAM: Final = "CHORIA_AJ_EVENTS"

TASKS_STREAM_DESCRIPTION: Final = "Choria Async Jobs Tasks"
QUEUE_STREAM_DESCRIPTION: Final = "Choria Async Jobs Work Queue"
CONFIG_BUCKET_DESCRIPTION: Final = "Choria Async Jobs Configuration"
ELECTIONS_BUCKET_DESCRIPTION: Final = "Choria Async Jobs Leader Elections"
EVENTS_STREAM_DESCRIPTION: Final = "Choria Async Jobs Lifecycle Events"

# JetStream API (Go has no domain or prefix support, docs/decisions.md item 14; we allow a prefix: docs/protocol.md,
# JetStream domains and API prefix).
JS_API_PREFIX: Final = "$JS.API"

# Headers (docs/protocol.md, Headers).
HDR_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_STATUS: Final = "Status"
HDR_DESCRIPTION: Final = "Description"
HDR_PENDING_MESSAGES: Final = "Nats-Pending-Messages"
HDR_AJ_CONTENT_TYPE: Final = "AJ-Content-Type"
HDR_AJ_HANDLER_DEADLINE: Final = "AJ-Handler-Deadline"
HDR_AJ_ERROR: Final = "AJ-Error"
HDR_AJ_TERMINATE: Final = "AJ-Terminate"
HDR_AJ_PIPELINED: Final = "AJ-Pipelined"
"""On a work item sent by a pipelined enqueue (value ``1``): the item may be stored a moment before its task, so a
worker that does not find the task waits for it a little instead of terminating the item. Go ignores it."""
TASK_CONTENT_TYPE: Final = "application/x-asyncjobs-task+json"

# Ack bodies (docs/protocol.md, Acknowledgements).
ACK: Final = b"+ACK"
TERM: Final = b"+TERM"
WPI: Final = b"+WPI"
NAK_PREFIX: Final = b'-NAK {"delay": '

# Event types (docs/protocol.md, Lifecycle events).
EVENT_TASK_STATE: Final = "io.choria.asyncjobs.v1.task_state"
EVENT_LEADER_ELECTED: Final = "io.choria.asyncjobs.v1.leader_elected"
# The server's advisory when a consumer stops redelivering a message: $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<s>.<c>
MAX_DELIVERIES_ADVISORY: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

# Work queue item kinds (docs/protocol.md, Work items).
ITEM_KIND_TASK: Final = 0

# JetStream error codes we act on (docs/protocol.md, JetStream error codes).
JS_ERR_STREAM_NOT_FOUND: Final = 10059
JS_ERR_CONSUMER_NOT_FOUND: Final = 10014
JS_ERR_NO_MESSAGE_FOUND: Final = 10037
# A message delete that found nothing to delete (already removed, e.g. acknowledged from a work queue).
JS_ERR_MSG_DELETE_FAILED: Final = 10057
JS_ERR_WRONG_LAST_SEQUENCE: Final = 10071
JS_ERR_STREAM_NAME_IN_USE: Final = 10058
JS_ERR_CONSUMER_NAME_EXISTS: Final = 10148
JS_ERR_CONSUMER_ALREADY_EXISTS: Final = 10105
JS_ERR_NOT_ENABLED_FOR_ACCOUNT: Final = 10039
JS_ERR_NOT_ENABLED: Final = 10076
# The status of a request nobody answered (core NATS "no responders"); JetStream errors carry it as their code too.
STATUS_NO_RESPONDERS: Final = 503
# Transient cluster conditions: no meta or stream leader yet (an election), or a node still catching up.
JS_ERR_CLUSTER_NOT_AVAILABLE: Final = 10008
JS_ERR_CLUSTER_NOT_LEADER: Final = 10009
# A replicated stream refusing an expected-sequence write while another write to the subject is in flight (which may
# be an earlier attempt of this very write): a conflict, to be checked again before it is believed.
JS_ERR_WRONG_LAST_SEQUENCE_CONSTANT: Final = 10164
# Transient answers of a replicated stream: retried like a missing leader.
JS_ERR_DUPLICATE_MSG_ID_IN_PROCESS: Final = 10158
JS_ERR_EXPECTED_LAST_SEQ_NOT_READY: Final = 10163
JS_ERR_TOO_MANY_REQUESTS: Final = 10167

# Defaults (docs/protocol.md, Defaults).
DEFAULT_QUEUE: Final = "DEFAULT"
DEFAULT_MAX_TRIES: Final = 10
DEFAULT_CONCURRENCY: Final = 10
WORKER_CONCURRENCY: Final = 50
"""Handler slots per process of a dedicated worker (the worker command, ``run_worker``): chosen from measurements,
see docs/deploying.md, Sizing. ``connect()`` keeps upstream's 10 for a worker embedded in another program."""
DEFAULT_QUEUE_MAX_CONCURRENT: Final = 100
DEFAULT_JOB_RUN_TIME_NS: Final = 3_600_000_000_000
DEFAULT_QUEUE_RUN_TIME_NS: Final = 60_000_000_000
DEFAULT_QUEUE_MAX_TRIES: Final = 100
DUPLICATE_WINDOW_NS: Final = 120_000_000_000
BLOCKED_NAK_DELAY_NS: Final = 5_000_000_000
NAME_PATTERN: Final = r"^[a-zA-Z0-9_:-]+$"

# Name lengths (our addition: Go checks only the characters). Task ids travel in subjects (CHORIA_AJ.T.<id>, the
# event subject) whose protocol line nats-server caps at 4096 bytes by default ("maximum control line exceeded"
# closes the connection), so ids stay well below that; a hash of a long natural key fits easily.
MAX_TASK_ID_LENGTH: Final = 1024
MAX_TASK_TYPE_LENGTH: Final = 255
# nats-server refuses stream names over 255 characters (err_code 10052, "stream name is too long"), and a queue's
# stream is CHORIA_AJ_Q_<name>, so the name gets what the 12 character prefix leaves: 243.
MAX_STREAM_NAME_LENGTH: Final = 255
MAX_QUEUE_NAME_LENGTH: Final = MAX_STREAM_NAME_LENGTH - len(QUEUE_STREAM_PREFIX)

# Error texts that travel in task `last_err` and that Go code may compare against.
ERR_DUPLICATE_ITEM: Final = "duplicate work queue item"
ERR_DEPENDENCIES_FAILED: Final = "task dependencies failed"
ERR_TERMINATE_SUFFIX: Final = "terminate task"

# Key-value buckets and push consumers, as nats.go and nats-server write them.
KV_OPERATION_HEADER: Final = "KV-Operation"
"""Set on delete and purge markers; a value without it is a plain put."""
KV_DELETE: Final = "DEL"
KV_PURGE: Final = "PURGE"
HDR_LAST_CONSUMER: Final = "Nats-Last-Consumer"
HDR_CONSUMER_STALLED: Final = "Nats-Consumer-Stalled"
STATUS_CONTROL: Final = "100"
"""The status of idle heartbeats and flow-control requests on a push consumer's deliver subject."""
