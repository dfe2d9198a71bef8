"""What importing costs: the package's names load on first use, and a worker supervisor imports no asyncio or nats.

Each check runs in a fresh interpreter, since this one has imported everything long ago.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import asyncjobs
from asyncjobs.cli import worker
from asyncjobs.loops import LOOP_CHOICES
from asyncjobs.retry import retry_policy_names

from .conftest import ROOT
from .test_worker_command import APPS

HEAVY = ("asyncio", "nats", "prometheus_client", "orjson", "ssl", "cryptography", "asyncjobs.client", "cmd_app")
"""Modules a supervisor has no use for: a worker's ~20 MB more."""


def fresh(code: str) -> object:
    """Run ``code`` in a new interpreter; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_package_loads_no_name_until_used() -> None:
    loaded = fresh("import json, sys, asyncjobs; print(json.dumps(sorted(sys.modules)))")
    assert isinstance(loaded, list)
    assert not [name for name in loaded if name.split(".")[0] in HEAVY or name.startswith("asyncjobs.")]


def test_every_exported_name_resolves_to_its_module_s_object() -> None:
    wrong = fresh(
        "import importlib, json, asyncjobs\n"
        "from asyncjobs import *\n"
        "wrong = [name for module, names in asyncjobs._EXPORTS.items() for name in names\n"
        "         if getattr(asyncjobs, name) is not getattr(importlib.import_module(module), name)\n"
        "         or globals()[name] is not getattr(asyncjobs, name)]\n"
        "print(json.dumps(wrong))"
    )
    assert wrong == []


def test_a_submodule_is_an_attribute_as_when_the_imports_were_eager() -> None:
    assert fresh("import json, asyncjobs; print(json.dumps(asyncjobs.codec.safe_text('x')))") == "x"
    assert fresh("import json, asyncjobs; print(json.dumps(hasattr(asyncjobs, 'no_such_thing')))") is False


def test_the_lazy_names_are_the_type_checked_imports_and_all() -> None:
    # Type checkers read the `if TYPE_CHECKING:` imports; the run time reads _EXPORTS: they must say the same.
    tree = ast.parse(Path(asyncjobs.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If))
    imported = {
        node.module: tuple(alias.name for alias in node.names)
        for node in guarded.body
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert len(imported) == len(guarded.body)
    assert imported == asyncjobs._EXPORTS
    assert sorted(name for names in imported.values() for name in names) == sorted(asyncjobs.__all__)


def test_the_command_line_choices_are_the_library_s() -> None:
    assert worker.LOOP_CHOICES == LOOP_CHOICES
    assert list(worker.RETRY_POLICY_NAMES) == retry_policy_names()


def test_a_supervisor_imports_no_asyncio_nor_nats() -> None:
    # The whole command up to the supervisor's loop, with a router that imports asyncjobs (checked in a child).
    loaded = fresh(
        "import json, sys\n"
        "import asyncjobs.cli.worker as worker\n"
        "worker.supervise = lambda count, command: print(json.dumps(sorted(sys.modules))) or 0\n"
        "from asyncjobs.cli import main\n"
        f"sys.exit(main(['worker', 'cmd_app:router', '--app-dir', {str(APPS)!r}, '--processes', '2',"
        " '--loop', 'asyncio', '--retry-policy', '1m', '--server', 'nats://127.0.0.1:9']))"
    )
    assert isinstance(loaded, list)
    assert "asyncjobs.cli.supervisor" in loaded
    assert not [name for name in loaded if name.split(".")[0] in HEAVY or name in HEAVY]
