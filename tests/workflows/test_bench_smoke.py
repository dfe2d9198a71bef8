"""The workflows benchmark (bench/workflows.py) runs end to end in its quick mode and produces every figure.

Only that it runs and what it reports are checked, never how fast: timings on a shared test machine prove nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from asyncjobs_workflows.constants import MAX_PARENTS
from bench import workflows
from bench.report import WORKFLOWS_BEGIN, WORKFLOWS_END, write_section
from bench.wf_common import fan_out_in

FIGURES = (
    "ref_rtt",
    "ref_hop",
    "ref_enqueue",
    "release_p50",
    "release_p99",
    "chain",
    "submit_20",
    "submit_50",
    "fanout_wf",
    "fanout_flat",
    "fanout_ratio",
    "fanout_release",
    "fanout_fan_in_lag",
    "fanout_reads",
)


@pytest.mark.parametrize(("total", "groups"), [(3, 0), (1_000, 0), (1_002, 0), (1_003, 2), (10_000, 10)])
def test_fan_out_in_has_the_asked_size_and_respects_the_parent_limit(total: int, groups: int) -> None:
    wf = fan_out_in("shape", total)
    wf.validate()
    assert len(wf.steps) == total
    assert max(len(step.after) for step in wf.steps.values()) <= MAX_PARENTS
    assert sum(name.startswith("g") for name in wf.steps) == groups
    assert wf.roots() == ("root",)


@pytest.mark.timeout(180)
async def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    args = workflows.parse_args(["--quick"])
    report = await workflows.run_all(args)

    assert sorted(report.figures) == sorted(FIGURES)
    for key in FIGURES:
        assert math.isfinite(report.figures[key]) and report.figures[key] > 0, key
    section = workflows.markdown(report, workflows.Settings.of(quick=True), 1.0)
    assert "| release latency p50" in section
    assert "Where the release latency goes" in section
    assert "nan" not in section
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nthe main report\n")
    write_section(docs, section, WORKFLOWS_BEGIN, WORKFLOWS_END)
    write_section(docs, section, WORKFLOWS_BEGIN, WORKFLOWS_END)  # rewritten in place, not appended again
    text = docs.read_text()
    assert text.startswith("# Performance\n\nthe main report\n")
    assert text.count(WORKFLOWS_BEGIN) == 1 and text.count(WORKFLOWS_END) == 1
