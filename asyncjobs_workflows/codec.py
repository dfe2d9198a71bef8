"""Reading and writing workflow definitions: the dict shape that JSON and YAML files share."""

from __future__ import annotations

import base64
import binascii
import importlib
from collections.abc import Mapping
from typing import Any

import orjson

from asyncjobs_workflows.constants import STEP_KEYS, WORKFLOW_KEYS, YAML_EXTRA
from asyncjobs_workflows.definition import Step, Trigger, Workflow
from asyncjobs_workflows.errors import InvalidWorkflow


def workflow_from_dict(cls: type[Workflow], data: Mapping[str, Any]) -> Workflow:
    """Build and validate a workflow (of class ``cls``) from its dict shape; see :meth:`Workflow.from_dict`.

    Raises:
        InvalidWorkflow: the data has the wrong shape or the workflow is invalid.
    """
    if not isinstance(data, Mapping):
        raise InvalidWorkflow(f"a workflow definition must be a mapping, not {type(data).__name__}")
    label = f"workflow {data.get('name')!r}"
    _check_keys(data, WORKFLOW_KEYS, label)
    if "name" not in data:
        raise InvalidWorkflow("a workflow definition needs a 'name': add one")
    workflow = cls(data["name"])
    steps = data.get("steps", [])
    if not isinstance(steps, list | tuple):
        raise InvalidWorkflow(f"{label}: 'steps' must be a list of steps, not {type(steps).__name__}")
    for index, raw in enumerate(steps):
        where = f"{label}: step #{index + 1}"
        if not isinstance(raw, Mapping):
            raise InvalidWorkflow(f"{where} must be a mapping with a 'name' and a 'task_type'")
        _check_keys(raw, STEP_KEYS, where)
        for required in ("name", "task_type"):
            if required not in raw:
                raise InvalidWorkflow(f"{where} has no {required!r}: add one")
        workflow.step(
            raw["name"],
            raw["task_type"],
            _payload(raw, f"{label}: step {raw['name']!r}"),
            after=raw.get("after", ()),
            trigger=raw.get("trigger", Trigger.ALL_SUCCESS),
            max_tries=raw.get("max_tries"),
            deadline=raw.get("deadline"),
            load_dependencies=raw.get("load_dependencies", False),
            when=raw.get("when"),
        )
    workflow.validate()
    return workflow


def load_json(text: str | bytes) -> Any:
    """The data of a JSON definition.

    Raises:
        InvalidWorkflow: the text is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidWorkflow(f"the workflow definition is not valid JSON: {exc}") from exc


def load_yaml(text: str) -> Any:
    """The data of a YAML definition (needs PyYAML).

    Raises:
        InvalidWorkflow: PyYAML is not installed, or the text is not YAML.
    """
    try:
        # import_module, not import: the module is optional and its stubs may be missing too.
        yaml = importlib.import_module("yaml")
    except ImportError as exc:
        raise InvalidWorkflow(
            f"reading a workflow from YAML needs PyYAML: pip install 'asyncjobs[{YAML_EXTRA}]', "
            "or use Workflow.from_json"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidWorkflow(f"the workflow definition is not valid YAML: {exc}") from exc


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise InvalidWorkflow(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}: use only {', '.join(allowed)}"
        )


def _payload(raw: Mapping[str, Any], where: str) -> Any:
    if "payload_base64" not in raw:
        return raw.get("payload")
    if "payload" in raw:
        raise InvalidWorkflow(f"{where} has both 'payload' and 'payload_base64': keep one")
    value = raw["payload_base64"]
    try:
        if not isinstance(value, str):
            raise TypeError(type(value).__name__)
        return base64.b64decode(value, validate=True)
    except (TypeError, binascii.Error) as exc:
        raise InvalidWorkflow(f"{where}: 'payload_base64' must be a standard base64 string: {exc}") from exc


def step_to_dict(step: Step) -> dict[str, Any]:
    """A step in the dict shape, leaving out fields at their defaults."""
    out: dict[str, Any] = {"name": step.name, "task_type": step.task_type}
    if step.payload is not None:
        try:
            value = orjson.loads(step.payload)
            # Only bytes that re-encode to themselves: "{ }" read from a file must come back byte for byte.
            exact = orjson.dumps(value) == step.payload
        except orjson.JSONDecodeError:
            exact = False
        if exact:
            out["payload"] = value
        else:
            out["payload_base64"] = base64.b64encode(step.payload).decode("ascii")
    if step.after:
        out["after"] = list(step.after)
    if step.trigger is not Trigger.ALL_SUCCESS:
        out["trigger"] = step.trigger.value
    if step.max_tries is not None:
        out["max_tries"] = step.max_tries
    if step.deadline is not None:
        out["deadline"] = step.deadline
    if step.load_dependencies:
        out["load_dependencies"] = True
    if step.when:
        # One condition as a mapping, the way people write it; several as a list, all of which must hold.
        conditions = [condition.to_dict() for condition in step.when]
        out["when"] = conditions[0] if len(conditions) == 1 else conditions
    return out
