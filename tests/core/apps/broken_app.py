"""A module whose import fails, for the worker-command tests."""

raise RuntimeError("this module is broken on purpose")
