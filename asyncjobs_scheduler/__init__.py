"""Leader-elected cron scheduler for asyncjobs.

Placeholder: this package is filled in by its own issue. It depends on :mod:`asyncjobs` only.
"""

__all__: list[str] = []
