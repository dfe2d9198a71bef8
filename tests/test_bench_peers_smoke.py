"""The peer benchmark's orchestrator runs end to end on the asyncjobs adapter alone (``bench/peers``).

Quick mode, the project's own Python instead of a virtualenv (so nothing is installed and no network is needed),
one Redis server and one nats-server on loopback. The other peers need their own virtualenvs: ``./dev bench --peers``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asyncjobs.constants import WORKER_CONCURRENCY

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (apt-get install -y redis-server)"
)


@pytest.mark.timeout(90)
def test_quick_run_of_the_asyncjobs_adapter(tmp_path: Path) -> None:
    saved = tmp_path / "peers.json"
    command = [sys.executable, "bench/run.py", "--peers", "--quick", "--systems", "asyncjobs", "--no-sweep"]
    command += ["--current-python", "asyncjobs", "--no-install", "--no-write", "--results", str(saved)]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=80, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    system = json.loads(saved.read_text())["systems"]["asyncjobs"]
    assert system["notes"] == []
    figures = system["figures"]
    keys = ("enqueue", "enqueue_batch", "drain", "drain_c100", "steady", "rss_idle", "rss_load", "pss_idle", "pss_load")
    for key in (*keys, "cpu_worker", "cpu_server"):
        assert len(figures[key]) == 1, key
        assert figures[key][0] > 0, key
    # Shared pages count once per process in RSS and are split between the processes in PSS.
    assert figures["pss_load"][0] < figures["rss_load"][0]
    # A worker and its servers spend at least some CPU on a task, and not a whole core-second.
    assert 1 < figures["cpu_worker"][0] < 1_000_000 and 1 < figures["cpu_server"][0] < 1_000_000
    p50, p99 = figures["lat_p50"][0], figures["lat_p99"][0]
    assert 0 < p50 <= p99
    assert system["default_concurrency"] == str(WORKER_CONCURRENCY)
    assert "| drain, default concurrency, tasks/s |" in done.stdout
