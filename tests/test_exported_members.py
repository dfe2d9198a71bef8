"""Each package's ``__all__`` lists exactly the public names it exports, like httpx's test of the same name."""

from __future__ import annotations
import __future__

import importlib
import types

import pytest

PACKAGES = ["asyncjobs", "asyncjobs_scheduler", "asyncjobs_workflows"]


def _exported(package: types.ModuleType) -> set[str]:
    names = set()
    for name in dir(package):
        value = getattr(package, name)
        if name.startswith("_"):
            continue
        # Submodules appear as attributes once anything imports them; `from __future__ import annotations` too.
        if isinstance(value, types.ModuleType) and value.__name__.startswith(f"{package.__name__}."):
            continue
        if isinstance(value, __future__._Feature):
            continue
        names.add(name)
    return names


@pytest.mark.parametrize("package_name", PACKAGES)
def test_all_lists_exactly_the_exported_names(package_name: str) -> None:
    package = importlib.import_module(package_name)
    declared = package.__all__
    assert len(declared) == len(set(declared)), f"{package_name}.__all__ has duplicates"
    assert _exported(package) == set(declared)
