"""A PNG of latency per variant, provider, optimization level and batch size.

One panel per (provider, optimization level); in each, one group of bars per
batch size, one bar per variant: the bar is the median latency per sample
(p50 / batch), the whisker reaches p90 / batch. matplotlib is imported here
only, with the non-interactive Agg backend.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_png
from .report import BenchReport


def plot_png(reports: list[BenchReport], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw every report (one row each) into one PNG at ``path``, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise FileNotFoundError(f"plot path {path}: not a file in an existing directory")
    panels = sorted({(m.provider, m.optimization) for r in reports for m in r.measurements})
    if not panels:
        raise ValueError("nothing was measured, nothing to plot")
    fig, axes = plt.subplots(len(reports), len(panels), squeeze=False,
                             figsize=(4.2 * len(panels), 3.0 * len(reports) + 0.6))
    for row, report in enumerate(reports):
        names = [v.name for v in report.variants]
        for col, (provider, opt) in enumerate(panels):
            ax = axes[row][col]
            ms = [m for m in report.measurements if (m.provider, m.optimization) == (provider, opt)]
            batches = sorted({m.batch_size for m in ms})
            width = 0.8 / max(len(names), 1)
            for k, name in enumerate(names):
                pts = {m.batch_size: m for m in ms if m.variant == name}
                xs = [i + (k - (len(names) - 1) / 2) * width for i, b in enumerate(batches) if b in pts]
                p50 = np.array([pts[b].stats.p50_ms / b for b in batches if b in pts])
                p90 = np.array([pts[b].stats.p90_ms / b for b in batches if b in pts])
                ax.bar(xs, p50, width, yerr=[np.zeros_like(p50), p90 - p50], capsize=2,
                       label=name, color=f"C{k}")
            ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
            ax.set_title(f"{report.model}\n{provider} {opt}", fontsize=9)
            ax.set_ylabel("ms per sample (p50, whisker p90)", fontsize=8)
            ax.tick_params(labelsize=8)
        axes[row][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_png(path, fig)
    return path
