"""Small programs the workflow process tests start as subprocesses (``python -m tests.workflows.apps.NAME``)."""
