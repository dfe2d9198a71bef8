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
)
WORKFLOW_KEYS: Final = ("name", "steps")
