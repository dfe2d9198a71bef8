"""docs/deploying.md: every recipe on the page is checked against the worker it configures.

Each block of the page that is a file names it on its first line (``# <path>`` or ``# <path>: what it is``). The
systemd unit, the Dockerfile, the Compose file and the Kubernetes manifests are parsed, their worker command lines
go through the command's own argument parser, and their stop timeouts are compared with ``--shutdown-grace``. The
Python files run against a real nats-server (the provisioning script against a three-node cluster too), the
nats-server configuration is checked with ``nats-server -t``, the image's command answers its own health check, and
the unit's ``ExecStart`` is stopped with SIGTERM mid-task, as systemd stops it.

PyYAML is not a dependency, so the YAML blocks are read by a small parser of the block-style subset the page uses
(mappings, sequences, plain and double-quoted scalars, JSON-style flow lists); anything outside it fails the test.
Where PyYAML happens to be installed, its reading must agree.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import nats
import pytest

import asyncjobs
from asyncjobs.cli import build_parser
from asyncjobs.cli import worker as worker_command
from asyncjobs.cluster import NatsCluster
from asyncjobs.server import find_nats_server
from asyncjobs.testing import eventually

from .conftest import ROOT, ClientFactory, Command, fetch, wait_state
from .test_worker_command import APPS

DOC: Final = ROOT / "docs" / "deploying.md"
FENCE: Final = re.compile(r"^```(?P<info>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
FILE_HEADER: Final = re.compile(r"# (?P<path>[\w./@-]+)(?::\s|\n)")
DOC_ROUTER: Final = "myapp.tasks:router"
TEST_ROUTER: Final = "cmd_app:router"
STOP_MARGIN_S: Final = 5.0
"""A supervisor's stop timeout must exceed the shutdown grace by at least this much."""
SERVING: Final = r"serving /metrics, /healthz and /readyz on http://[\d.]+:(\d+)"

UNIT: Final = "/etc/systemd/system/email-worker.service"
DOCKERFILE: Final = "Dockerfile"
REQUIREMENTS: Final = "requirements.txt"
COMPOSE: Final = "compose.yaml"
K8S: Final = "deploy/email-worker.yaml"
CLUSTER_CONF: Final = "/etc/nats/cluster.conf"
APP_FILES: Final = ("myapp/tasks.py", "myapp/provision.py", "myapp/worker.py")
DOCKERFILE_INSTRUCTIONS: Final = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER",
        "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
    }
)  # fmt: skip


# ---- reading the page -------------------------------------------------------------------------------------------


def _files() -> dict[str, tuple[str, str]]:
    """The page's file blocks by path: (info string, text)."""
    files: dict[str, tuple[str, str]] = {}
    for block in FENCE.finditer(DOC.read_text()):
        header = FILE_HEADER.match(block["body"])
        if header is None:
            continue
        assert header["path"] not in files, f"{header['path']} appears twice in {DOC.name}"
        files[header["path"]] = (block["info"], block["body"])
    return files


FILES: Final = _files()


def _file(path: str) -> str:
    assert path in FILES, f"{DOC.name} has no block for {path}: it has {sorted(FILES)}"
    return FILES[path][1]


def _shell_commands() -> list[list[str]]:
    """Every command of the page's ```sh blocks, continuation lines joined, split as a shell would."""
    commands = []
    for block in FENCE.finditer(DOC.read_text()):
        if block["info"] == "sh":
            for line in block["body"].replace("\\\n", " ").splitlines():
                if line.strip():
                    commands.append(shlex.split(line, comments=True))
    return commands


def parse_worker(argv: list[str]) -> argparse.Namespace:
    """``asyncjobs ARGV`` through the command's own parser; fails the test with argparse's message."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"`asyncjobs {shlex.join(argv)}` does not parse:\n{errors.getvalue()}") from None
    assert getattr(args, "run", None) is worker_command.run, f"`asyncjobs {shlex.join(argv)}` is not the worker"
    return args


def _for_test(argv: list[str]) -> list[str]:
    """A documented worker command line with the test app in place of myapp and a free metrics port (0)."""
    assert DOC_ROUTER in argv, argv
    out = [TEST_ROUTER if arg == DOC_ROUTER else arg for arg in argv]
    out[out.index("--metrics-port") + 1] = "0"
    return [*out, "--app-dir", str(APPS)]


def _seconds(value: str) -> float:
    """A Compose duration such as ``45s`` or ``1m30s``."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert parts is not None and value, f"not a duration: {value!r}"
    return int(parts[1] or 0) * 60 + float(parts[2] or 0)


# ---- a YAML subset ----------------------------------------------------------------------------------------------

_YAML_KEY: Final = re.compile(r"(?P<key>[A-Za-z0-9_./-]+):(?:\s+(?P<value>.*))?$")
_YAML_INT: Final = re.compile(r"-?\d+")


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar(text: str) -> Any:
    if text[0] in '"[{':
        return json.loads(text)
    if text[0] == "'":
        assert text.endswith("'") and len(text) > 1, f"unterminated string: {text!r}"
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if _YAML_INT.fullmatch(text):
        return int(text)
    assert text[0] not in "&*!|>%@`" and ": " not in text, f"outside the YAML subset: {text!r}"
    return text


class _Yaml:
    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str]] = []
        for raw in text.splitlines():
            line = _strip_comment(raw).rstrip()
            if line.strip():
                assert "\t" not in line, f"a tab in YAML: {raw!r}"
                self.lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
        self.i = 0

    def document(self) -> Any:
        value = self.block(self.lines[0][0])
        assert self.i == len(self.lines), f"YAML not understood from {self.lines[self.i][1]!r}"
        return value

    def block(self, indent: int) -> Any:
        text = self.lines[self.i][1]
        return self.sequence(indent) if text == "-" or text.startswith("- ") else self.mapping(indent)

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.i < len(self.lines):
            at, text = self.lines[self.i]
            if at != indent or not (text == "-" or text.startswith("- ")):
                assert at <= indent, f"unexpected indentation at {text!r}"
                break
            rest = text[1:].strip()
            if not rest:
                self.i += 1
                items.append(self.block(self.lines[self.i][0]))
            elif _YAML_KEY.match(rest) and rest[0] not in "\"'[{":
                # "- key: value" opens a mapping whose keys line up with this first one.
                self.lines[self.i] = (at + text.index(rest), rest)
                items.append(self.mapping(at + text.index(rest)))
            else:
                items.append(_scalar(rest))
                self.i += 1
        return items

    def mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self.i < len(self.lines):
            at, text = self.lines[self.i]
            if at < indent or (at == indent and text.startswith("- ")):
                break
            assert at == indent, f"unexpected indentation at {text!r}"
            found = _YAML_KEY.match(text)
            assert found, f"outside the YAML subset: {text!r}"
            key, value = found["key"], found["value"]
            assert key not in result, f"duplicate key {key!r}"
            self.i += 1
            if value:
                result[key] = _scalar(value)
            elif self.i < len(self.lines) and (
                self.lines[self.i][0] > indent
                or (self.lines[self.i][0] == indent and self.lines[self.i][1].startswith("- "))
            ):
                result[key] = self.block(self.lines[self.i][0])
            else:
                result[key] = None
        return result


def load_yaml(text: str) -> list[Any]:
    """The documents of a YAML stream in the subset the page uses."""
    readers = [_Yaml(part) for part in re.split(r"^---$", text, flags=re.M)]
    documents = [reader.document() for reader in readers if reader.lines]
    with contextlib.suppress(ImportError):
        import yaml  # optional: PyYAML is not a dependency

        assert list(yaml.safe_load_all(text)) == documents, "the YAML subset reader disagrees with PyYAML"
    return documents


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: x # note\n", {"a": 1, "b": "x"}),
        ('a:\n  - x\n  - "20"\n  - k: v\n    j: [ "p", "q" ]\n', {"a": ["x", "20", {"k": "v", "j": ["p", "q"]}]}),
        ("a:\n- b: nats://n:4222\n  c: 0.0.0.0\n", {"a": [{"b": "nats://n:4222", "c": "0.0.0.0"}]}),
        ('a: "#x"\nb: c:d\nc:\n', {"a": "#x", "b": "c:d", "c": None}),
    ],
)
def test_the_yaml_subset_reader(text: str, expected: Any) -> None:
    assert load_yaml(text) == [expected]


@pytest.mark.parametrize("text", ["a: &x 1\n", "a: 1\n  b: 2\n", "a: |\n  x\n", "a: 1\na: 2\n"])
def test_the_yaml_subset_reader_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        load_yaml(text)


# ---- the files, statically --------------------------------------------------------------------------------------


def test_the_page_has_every_recipe_as_a_named_file() -> None:
    assert set(FILES) == {UNIT, DOCKERFILE, REQUIREMENTS, COMPOSE, K8S, CLUSTER_CONF, *APP_FILES}
    assert [FILES[path][0] for path in (UNIT, DOCKERFILE, COMPOSE, K8S, CLUSTER_CONF)] == [
        "ini",
        "dockerfile",
        "yaml",
        "yaml",
        "conf",
    ]


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(_file(UNIT))
    return unit


def _exec_start(unit: configparser.ConfigParser) -> tuple[str, list[str]]:
    binary, *argv = shlex.split(unit["Service"]["ExecStart"])
    return binary, argv


def _unit_environment(unit: configparser.ConfigParser) -> dict[str, str]:
    name, _, value = unit["Service"]["Environment"].partition("=")
    return {name: value}


def test_the_systemd_unit_stops_with_sigterm_within_its_timeout_and_restarts_on_failure_only() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    binary, argv = _exec_start(unit)
    assert binary.startswith("/") and binary.endswith("/bin/asyncjobs"), binary
    args = parse_worker(argv)
    assert args.router == DOC_ROUTER and args.no_create and args.metrics_port is not None
    assert service["Type"] in ("exec", "simple")
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # control-group would signal --processes workers twice: no grace
    assert float(service["TimeoutStopSec"]) > args.shutdown_grace + STOP_MARGIN_S
    assert service["Restart"] == "on-failure"
    assert "2" in service["RestartPreventExitStatus"].split()
    assert service["User"] not in ("", "root")
    assert service["WorkingDirectory"].startswith("/")
    assert _unit_environment(unit)["NATS_URL"].startswith("nats://")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    name = Path(UNIT).stem
    systemctl = [command for command in _shell_commands() if "systemctl" in command[:2]]
    assert systemctl and all(command[-1] in (name, "daemon-reload") for command in systemctl), systemctl
    journalctl = [command for command in _shell_commands() if command[:1] == ["journalctl"]]
    assert journalctl and all(command[command.index("-u") + 1] == name for command in journalctl)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    binary, _ = _exec_start(_unit())
    # The documented virtualenv does not exist here; point ExecStart at this one's script, which does.
    here = Path(sys.executable).parent / "asyncjobs"
    path = tmp_path / Path(UNIT).name
    path.write_text(_file(UNIT).replace(binary, str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in done.stderr.splitlines() if str(path) in line or "is not executable" in line]
    assert done.returncode == 0 and not problems, done.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, arguments)."""
    instructions = []
    logical = ""
    for line in _file(DOCKERFILE).splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        word, _, rest = logical.strip().partition(" ")
        instructions.append((word, rest.strip()))
        logical = ""
    assert not logical, "the Dockerfile ends with a continuation line"
    return instructions


def _exec_form(instruction: str, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"{instruction} is not in exec form (a JSON array): {text}") from None
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), text
    return value


def _image() -> dict[str, Any]:
    """What the page's image runs: entrypoint, cmd, user, stop signal, health check, exposed ports."""
    instructions = _dockerfile()
    words = [word for word, _ in instructions]
    assert set(words) <= DOCKERFILE_INSTRUCTIONS, set(words) - DOCKERFILE_INSTRUCTIONS
    assert words[0] == "FROM"
    found = dict(instructions)  # the last of each wins, as in docker build
    check = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])", found["HEALTHCHECK"])
    assert check, f"HEALTHCHECK is not `[--option=value ...] CMD [exec form]`: {found['HEALTHCHECK']}"
    return {
        "from": found["FROM"],
        "entrypoint": _exec_form("ENTRYPOINT", found["ENTRYPOINT"]),
        "cmd": _exec_form("CMD", found["CMD"]),
        "user": found["USER"],
        "stopsignal": found["STOPSIGNAL"],
        "healthcheck": _exec_form("HEALTHCHECK CMD", check[2]),
        "expose": found["EXPOSE"].split(),
        "run": [rest for word, rest in instructions if word == "RUN"],
    }


def test_the_dockerfile_runs_the_worker_as_process_1_and_checks_its_health() -> None:
    image = _image()
    assert image["from"] == "python:3.11-slim"
    assert image["entrypoint"] == ["asyncjobs", "worker"]
    args = parse_worker(image["entrypoint"][1:] + image["cmd"])
    assert args.router == DOC_ROUTER and args.metrics_port is not None
    assert image["stopsignal"] == "SIGTERM"
    uid, _, gid = image["user"].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit()), "USER must be numeric for runAsNonRoot"
    assert any(f"--uid {uid}" in run for run in image["run"]), "the image must create the user it runs as"
    program, option, code = image["healthcheck"]
    assert (program, option) == ("python", "-c")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", code)
    assert url and url[2] == "/healthz" and int(url[1]) == args.metrics_port, code
    assert str(args.metrics_port) in image["expose"]
    compile(code, "HEALTHCHECK", "exec")


def test_the_requirements_pin_this_version() -> None:
    pins = [line for line in _file(REQUIREMENTS).splitlines() if line and not line.startswith("#")]
    assert pins == [f"asyncjobs=={importlib.metadata.version('asyncjobs')}"]


def test_the_command_lines_in_the_text_parse() -> None:
    typed = [command for command in _shell_commands() if command[:1] == ["asyncjobs"]]
    assert typed
    for command in typed:
        assert parse_worker(command[1:]).router == DOC_ROUTER


def test_docker_commands_wait_longer_than_the_grace() -> None:
    image = _image()
    grace = parse_worker(image["entrypoint"][1:] + image["cmd"]).shutdown_grace
    docker = [command for command in _shell_commands() if command[:1] == ["docker"]]
    run = next(command for command in docker if command[1] == "run")
    stop = next(command for command in docker if command[1] == "stop")
    assert float(run[run.index("--stop-timeout") + 1]) > grace + STOP_MARGIN_S
    assert float(stop[stop.index("-t") + 1]) > grace + STOP_MARGIN_S
    assert "NATS_URL" in " ".join(run)


def test_the_compose_file_gives_the_worker_more_than_its_grace_and_nats_a_volume() -> None:
    [compose] = load_yaml(_file(COMPOSE))
    services = compose["services"]
    worker, server = services["worker"], services["nats"]
    args = parse_worker(_image()["entrypoint"][1:] + worker["command"])
    assert args.router == DOC_ROUTER
    assert _seconds(worker["stop_grace_period"]) > args.shutdown_grace + STOP_MARGIN_S
    assert worker["environment"]["NATS_URL"] == "nats://nats:4222"
    assert worker["depends_on"] == ["nats"] and worker["restart"] == "on-failure"
    assert worker["build"] == "."
    assert server["image"].startswith("nats:2")
    command = server["command"]
    assert "-js" in command
    store = command[command.index("-sd") + 1]
    volume = next(v for v in server["volumes"] if v.endswith(f":{store}")).partition(":")[0]
    assert volume in compose["volumes"]


def test_the_kubernetes_deployment_outlasts_the_grace_and_probes_the_worker_it_starts() -> None:
    deployment, budget = load_yaml(_file(K8S))
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert (budget["apiVersion"], budget["kind"]) == ("policy/v1", "PodDisruptionBudget")
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels == budget["spec"]["selector"]["matchLabels"]
    assert spec["replicas"] > 1
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert all(isinstance(arg, str) for arg in container["args"]), "Kubernetes takes args as strings only"
    args = parse_worker(_image()["entrypoint"][1:] + container["args"])
    assert args.router == DOC_ROUTER and args.no_create
    assert pod["terminationGracePeriodSeconds"] > args.shutdown_grace + STOP_MARGIN_S
    assert args.metrics_address == "0.0.0.0"  # the kubelet probes the pod's address
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == args.metrics_port, probe
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == args.metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert {"name": "NATS_URL", "value": "nats://nats:4222"} in container["env"]
    assert pod["securityContext"]["runAsNonRoot"] is True and _image()["user"].split(":")[0].isdigit()
    assert "memory" in container["resources"]["limits"] and "cpu" not in container["resources"]["limits"]
    name = deployment["metadata"]["name"]
    kubectl = [command for command in _shell_commands() if command[:1] == ["kubectl"]]
    assert kubectl and all(command[-1] in (f"deployment/{name}", K8S) for command in kubectl), kubectl


def test_the_cluster_configuration_is_valid_and_routes_three_jetstream_nodes(tmp_path: Path) -> None:
    text = _file(CLUSTER_CONF)
    path = tmp_path / "cluster.conf"
    path.write_text(text)
    done = subprocess.run(
        [find_nats_server(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert re.search(r"^server_name: nats-a$", text, re.M)
    assert re.search(r"^jetstream \{\n  store_dir: ", text, re.M)
    assert len(re.findall(r"^\s+nats-route://nats-[abc]\.example\.net:6222$", text, re.M)) == 3
    servers = "nats://nats-a.example.net:4222,nats://nats-b.example.net:4222,nats://nats-c.example.net:4222"
    assert _unit_environment(_unit())["NATS_URL"] == servers


# ---- the files, running -----------------------------------------------------------------------------------------


async def _start(
    commands: list[Command], argv: list[str], env: dict[str, str], *, module: str = "asyncjobs"
) -> Command:
    command = Command(env=env)
    command.args = ["-m", module, *argv]
    commands.append(await command.start())
    return command


def _write_app(root: Path, *, metrics_port: str = "0") -> dict[str, str]:
    """Write the page's myapp package under ``root``; returns the environment that imports it."""
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    for path in APP_FILES:
        (root / path).write_text(_file(path).replace("prometheus_port=9090", f"prometheus_port={metrics_port}"))
    return {"PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}


async def _provision(env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "myapp.provision",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_the_application_provisions_its_queue_and_its_handlers_run(
    nats_url: str, make_client: ClientFactory, commands: list[Command], tmp_path: Path
) -> None:
    env = {**_write_app(tmp_path), "NATS_URL": nats_url}
    output = await _provision(env)
    assert "queue EMAIL: max_run_time 300.0s, max_concurrent 200" in output
    assert "task store: 1 replica(s)" in output
    client = await make_client(queue=asyncjobs.Queue("EMAIL", no_create=True))
    sent = await client.enqueue(asyncjobs.Task("email:new", {"to": "user@example.net"}))
    refused = await client.enqueue(asyncjobs.Task("email:new", {"to": "nobody"}))
    digest = await client.enqueue(asyncjobs.Task("file:digest", b"abc"))

    # The command line of the page, run from the directory that holds myapp/, until the queue is idle.
    argv = ["worker", DOC_ROUTER, "--queue", "EMAIL", "--no-create", "--until-idle", "--app-dir", str(tmp_path)]
    worker = await _start(commands, argv, env)
    assert await worker.wait() == 0, worker.output
    done = await client.get_task(sent.id)
    assert done.state == asyncjobs.TaskState.COMPLETED and done.result is not None
    assert done.result.payload == "sent to user@example.net"
    assert (await client.get_task(refused.id)).state == asyncjobs.TaskState.TERMINATED
    hashed = await client.get_task(digest.id)
    assert hashed.result is not None
    assert hashed.result.payload == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    # myapp/worker.py: run_worker stops on SIGTERM with status 0.
    in_code = await _start(commands, [], env, module="myapp.worker")
    await in_code.wait_line(SERVING)
    await in_code.wait_line("worker started: queue EMAIL, 20 concurrent handlers")
    in_code.signal(signal.SIGTERM)
    assert await in_code.wait() == 0, in_code.output


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_provisioning_on_a_cluster_replicates_every_stream(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    env = _write_app(tmp_path)
    output = await _provision({**env, "NATS_URL": ",".join(nats_cluster.urls), "NATS_REPLICAS": "3"})
    assert "task store: 3 replica(s)" in output
    nc = await nats.connect(nats_cluster.urls)
    try:
        js = nc.jetstream()
        for stream in ("CHORIA_AJ_TASKS", "KV_CHORIA_AJ_CONFIGURATION", "KV_CHORIA_AJ_ELECTIONS", "CHORIA_AJ_Q_EMAIL"):
            assert (await js.stream_info(stream)).config.num_replicas == 3, stream
    finally:
        await nc.close()


async def test_the_image_command_answers_its_health_check_and_stops_on_sigterm(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    image = _image()
    [compose] = load_yaml(_file(COMPOSE))
    stop_timeout = _seconds(compose["services"]["worker"]["stop_grace_period"])
    await make_client(queue="EMAIL")  # the queue the image's --no-create expects
    argv = image["entrypoint"][1:] + _for_test(image["cmd"])
    container = await _start(commands, argv, {"NATS_URL": nats_url})
    port = (await container.wait_line(SERVING))[1]
    await container.wait_line("worker started")
    program, *check = image["healthcheck"]
    check = [arg.replace(":9090/", f":{port}/") for arg in check]
    health = await asyncio.create_subprocess_exec(sys.executable if program == "python" else program, *check)
    assert await asyncio.wait_for(health.wait(), 10) == 0, "the image's HEALTHCHECK fails against a running worker"
    assert (await fetch(f"http://127.0.0.1:{port}/readyz"))[0] == 200
    container.signal(signal.SIGTERM)
    assert await container.wait(timeout=stop_timeout) == 0, container.output


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_the_systemd_stop_hands_a_running_task_back_within_timeout_stop_sec(
    nats_url: str, make_client: ClientFactory, commands: list[Command], tmp_path: Path
) -> None:
    """The unit's ExecStart as systemd runs it, stopped mid-task the way `systemctl stop` stops it."""
    unit = _unit()
    _, documented = _exec_start(unit)
    grace = parse_worker(documented).shutdown_grace
    timeout_stop = float(unit["Service"]["TimeoutStopSec"])
    env = {**_unit_environment(unit), "NATS_URL": nats_url}
    argv = _for_test(documented)  # --app-dir stands in for WorkingDirectory
    client = await make_client(queue="EMAIL")  # provisioned first, as --no-create wants
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 120, "marker": str(tmp_path / "runs")}))

    service = await _start(commands, argv, env)
    base = f"http://127.0.0.1:{(await service.wait_line(SERVING))[1]}"
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=30)
    assert (await fetch(f"{base}/readyz"))[0] == 200

    service.signal(getattr(signal, unit["Service"]["KillSignal"]))  # what `systemctl stop` sends
    stopped_at = time.monotonic()

    async def not_ready() -> bool:
        status, body = await fetch(f"{base}/readyz")
        return status == 503 and "stopping" in body

    await eventually(not_ready, timeout=10, message="/readyz to answer 503 while the worker stops")
    assert (await fetch(f"{base}/healthz"))[0] == 200  # alive through the grace: no liveness restart
    assert await service.wait(timeout=timeout_stop) == 0, service.output
    took = time.monotonic() - stopped_at
    assert grace - 1 <= took < timeout_stop, f"the stop took {took:.1f}s"  # the handler had its whole grace
    handed_back = await client.get_task(task.id)
    assert handed_back.state == asyncjobs.TaskState.RETRY
    assert handed_back.last_err == "worker stopped before the handler finished"

    # The next start of the same command (as after `systemctl restart`) runs the task at once.
    again = await _start(commands, [*argv, "--until-idle"], env)
    assert await again.wait() == 0, again.output
    done = await client.get_task(task.id)
    assert done.state == asyncjobs.TaskState.COMPLETED
    assert done.tries == 1  # the run cut short by the stop is not the task's failure: it keeps its tries
    assert done.result is not None and done.result.payload == "done on run 2"
