"""A module that fails on import, for the bad-router error path of ``ajc tasks process``."""

raise RuntimeError("broken on purpose")
