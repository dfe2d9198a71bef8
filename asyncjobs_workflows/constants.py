"""Names and limits of workflow definitions: the keys of the dict (JSON, YAML) shape, and the size limits."""

from __future__ import annotations

from typing import Final

MAX_STEPS: Final = 10_000
"""The most steps a workflow may have: each step becomes a task per run, and the definition is stored as one value."""
MAX_PARENTS: Final = 1_000
"""The most steps one step may wait for: each parent becomes a task dependency, loaded with the task."""
MAX_WORKFLOW_NAME_LENGTH: Final = 128
"""The longest workflow name; workflow, run and step names together must fit a task id."""
MAX_STEP_NAME_LENGTH: Final = 128
"""The longest step name."""
YAML_EXTRA: Final = "workflows-yaml"
"""The extra that installs PyYAML for :meth:`Workflow.from_yaml`."""

STEP_KEYS: Final = (
    "name",
    "task_type",
    "payload",
    "payload_base64",
    "after",
    "trigger",
    "max_tries",
    "deadline",
    "load_dependencies",
    "when",
)
WORKFLOW_KEYS: Final = ("name", "steps")

# -- the wire: where runs are kept and how step tasks are named ---------------------------------------------------

RUNS_BUCKET: Final = "CHORIA_AJ_WORKFLOWS"
"""The key-value bucket holding workflow runs (stream ``KV_CHORIA_AJ_WORKFLOWS``)."""
RUNS_BUCKET_DESCRIPTION: Final = "Choria Async Jobs Workflow Runs"
RUN_KEY_PREFIX: Final = "run."
"""``run.<run id>``: the run's record (workflow name, queue, state, times, generation)."""
DEFINITION_KEY_PREFIX: Final = "def."
"""``def.<run id>``: the workflow definition the run was submitted with, in the dict shape (never changes)."""
STARTED_KEY_PREFIX: Final = "started."
"""``started.<run id>.<step name, ':' written '='>``: when the step's latest try started."""
FEED_NAME: Final = "CHORIA_AJ_WORKFLOWS"
"""The durable consumer on ``CHORIA_AJ_EVENTS`` that releasers share."""
STEP_TASK_ID_PREFIX: Final = "wf:"
"""Step task ids are ``wf:<run id>:<step name>``."""
MAX_RUN_ID_LENGTH: Final = 64
RUN_ID_PATTERN: Final = r"^[a-zA-Z0-9_-]+$"
RUN_EVENT_PREFIX: Final = "CHORIA_AJ.WF.E.run_state."
"""Run state events are published (core NATS, not stored) on ``CHORIA_AJ.WF.E.run_state.<run id>``."""
RUN_EVENT_TYPE: Final = "io.asyncjobs.workflows.v1.run_state"

SKIPPED_PREFIX: Final = "workflow step skipped: "
"""The ``last_err`` of a skipped step's task (stored ``terminated``: it never runs)."""
CANCELLED_ERROR: Final = "workflow run cancelled"
"""The ``last_err`` of a step task that a cancel stopped before it started (stored ``terminated``)."""
DEPENDENCY_FAILED_PREFIX: Final = "task dependencies failed: "
"""The ``last_err`` prefix of a step made ``unreachable`` by a failed ancestor, as the core and Go write it."""

SWEEP_INTERVAL_S: Final = 30.0
"""How often a releaser re-checks every running run, in case an event was lost (a publish is not guaranteed)."""
SUBMIT_GRACE_S: Final = 30.0
"""A run still half-submitted this long after it was created is completed by a releaser's sweep."""
FEED_ACK_WAIT_S: Final = 10.0
"""Seconds before an event a releaser took and did not acknowledge (it died) goes to another releaser."""
DECIDE_ATTEMPTS: Final = 5
"""Reads and writes of one step before giving up on a write that keeps conflicting (the sweep comes back to it)."""
RELEASE_CONCURRENCY: Final = 64
"""Events a releaser works on at once."""
LOAD_CONCURRENCY: Final = 256
"""Task loads in flight at once when reading a whole run."""
