"""Bar plots of result tables (matplotlib, written without a display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from clipood.engine.run_folder import write_atomic


def plot_grouped_bars(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[str],
    path: Path,
    title: str,
    ylabel: str = "accuracy (%)",
) -> Path:
    """Write a grouped bar chart: one group per row, one bar per column, values in [0, 1]
    shown in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    width = 0.8 / len(columns)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 4.0))
    for i, column in enumerate(columns):
        positions = [x + (i - (len(columns) - 1) / 2) * width for x in range(len(names))]
        values = [100.0 * rows[name].get(column, float("nan")) for name in names]
        bars = axes.bar(positions, values, width, label=column)
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.legend(fontsize=8, ncols=min(4, len(columns)))
    figure.tight_layout()
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
    return path
