"""Draw the peer benchmark's concurrency sweep: ``python bench/peers/plot.py OUT.png < sweep.json``.

Runs in the plotting virtualenv (``.bench/venvs/_plot``, matplotlib), so it imports nothing from the project. The
JSON on stdin: ``{"levels": [1, 10, ...], "series": {"label": {"10": tasks_per_s, ...} or {"n/a": tasks_per_s}}}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(out: str, data: dict[str, Any]) -> None:
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    levels = [int(level) for level in data["levels"]]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for label, points in data["series"].items():
        if "n/a" in points:  # no concurrency knob: one run, drawn across
            ax.plot(levels, [points["n/a"]] * len(levels), linestyle="--", label=f"{label} (no knob)")
            continue
        xs = [level for level in levels if str(level) in points]
        ax.plot(xs, [points[str(x)] for x in xs], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(levels, [str(level) for level in levels])
    ax.set_xlabel("concurrency per worker process (2 processes)")
    ax.set_ylabel("drain rate, tasks/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("No-op tasks drained by 2 worker processes")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], json.load(sys.stdin))
