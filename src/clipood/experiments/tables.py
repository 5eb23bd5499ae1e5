"""Result tables over seeds: mean, sample standard deviation, standard error and n.

Each finished run contributes one record to ``OUT/results.jsonl`` (see ``runner``).
A table cell aggregates one metric over seeds: the mean, the standard deviation with
``ddof=1`` (undefined for one seed), the standard error of the mean
(``scipy.stats.sem``, also ``ddof=1``) and the number of seeds ``n``. Accuracies are
stored as fractions and printed in percent.

Averages over target domains (or over datasets) are taken per seed first, over the
seeds that finished every column, and then aggregated over seeds like any cell.
For the open-class protocols, ``H`` is the harmonic mean of base and new accuracy
computed per seed and then averaged. ``H(mean)`` is the harmonic mean of the mean
base and mean new accuracy, the number papers usually print.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from clipood.engine.run_folder import write_text_atomic

AVERAGE = "avg"
# Metrics shown per protocol; the first is the one domain-shift tables show per target.
PROTOCOL_METRICS = {
    "domain_shift": ("accuracy",),
    "open_class": ("base", "new", "H"),
    "in_the_wild": ("base", "new", "total", "H"),
}


@dataclass(frozen=True)
class CellStats:
    """One metric over seeds; ``std`` and ``sem`` are NaN when ``n`` < 2."""

    mean: float
    std: float
    sem: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "-"
        text = f"{self.mean * scale:.{digits}f}"
        if self.n < 2:
            return f"{text} (n=1)"
        return (
            f"{text} ± {self.std * scale:.{digits}f} (se {self.sem * scale:.{digits}f}, n={self.n})"
        )


def cell_stats(values: Sequence[float]) -> CellStats:
    """Mean, ``ddof=1`` standard deviation, standard error and count of ``values``."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return CellStats(math.nan, math.nan, math.nan, 0)
    if array.size == 1:
        return CellStats(float(array[0]), math.nan, math.nan, 1)
    return CellStats(
        float(array.mean()), float(array.std(ddof=1)), float(stats.sem(array)), int(array.size)
    )


def harmonic_mean(base: float, new: float) -> float:
    """``2 B N / (B + N)``, defined as 0 when both are 0."""
    if base + new == 0:
        return 0.0
    return 2.0 * base * new / (base + new)


def load_results(out_dir: Path | str) -> list[dict]:
    """Read ``OUT/results.jsonl``; a later record of the same run replaces an earlier one."""
    path = Path(out_dir) / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run 'clipood experiment run' with --output {out_dir} first"
        )
    latest: dict[tuple, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: invalid JSON: {err}") from err
        latest[run_key(record)] = record
    return list(latest.values())


def run_key(record: dict) -> tuple:
    return tuple(record[k] for k in ("protocol", "dataset", "target", "method", "seed"))


# --- collecting values --------------------------------------------------------------


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


FINAL_SUFFIX = " (final weights)"


def _values(records: list[dict]) -> dict[tuple, dict[int, dict[str, float]]]:
    """Map (protocol, dataset, target, method) to {seed: metrics} for finished runs.

    A run that reports averaged weights and also records ``final_metrics`` (its last
    training weights) adds a row named ``METHOD (final weights)`` after its method.
    """
    table: dict[tuple, dict[int, dict[str, float]]] = defaultdict(dict)
    for record in records:
        if record.get("status") != "ok":
            continue
        key = (record["protocol"], record["dataset"], record["target"], record["method"])
        table[key][int(record["seed"])] = record["metrics"]
        if record.get("final_metrics"):
            final_key = (*key[:3], key[3] + FINAL_SUFFIX)
            table[final_key][int(record["seed"])] = record["final_metrics"]
    return table


def _per_seed_average(columns: list[dict[int, dict]], metric: str) -> list[float]:
    """Average ``metric`` over columns per seed, for seeds present in every column."""
    if not columns:
        return []
    seeds = set.intersection(*(set(c) for c in columns))
    return [float(np.mean([c[s][metric] for c in columns])) for s in sorted(seeds)]


# --- building tables ----------------------------------------------------------------


@dataclass
class Table:
    """A titled grid of cells; ``rows`` and ``columns`` are the printed labels."""

    title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], CellStats | float | None]
    note: str = ""


def build_tables(records: list[dict]) -> list[Table]:
    """Build the tables for every protocol and dataset present in ``records``."""
    values = _values(records)
    tables = []
    keys = _ordered((k[0], k[1]) for k in values)
    for protocol, dataset in keys:
        subset = {k: v for k, v in values.items() if k[0] == protocol and k[1] == dataset}
        if protocol == "open_class":
            tables.append(_open_class_table(dataset, subset))
        elif protocol == "in_the_wild":
            tables.append(_wild_table(dataset, subset))
        else:
            tables.append(_domain_table(protocol, dataset, subset))
    open_class = {k: v for k, v in values.items() if k[0] == "open_class"}
    if len({k[1] for k in open_class}) > 1:
        tables.append(_open_class_average(open_class))
    return tables


def _domain_table(protocol: str, dataset: str, values: dict) -> Table:
    methods = _ordered(k[3] for k in values)
    targets = _ordered(k[2] for k in values)
    cells: dict = {}
    for method in methods:
        columns = []
        for target in targets:
            seeds = values.get((protocol, dataset, target, method), {})
            cells[(method, target)] = cell_stats([m["accuracy"] for m in seeds.values()])
            columns.append(seeds)
        cells[(method, AVERAGE)] = cell_stats(_per_seed_average(columns, "accuracy"))
    return Table(
        title=f"{protocol} / {dataset}: target-domain accuracy (%)",
        rows=methods,
        columns=[*targets, AVERAGE],
        cells=cells,
        note="avg: mean over targets per seed (seeds with every target), then over seeds.",
    )


def _open_class_cells(seeds: dict[int, dict], cells: dict, row: str) -> None:
    for metric in ("base", "new", "H"):
        cells[(row, metric)] = cell_stats([m[metric] for m in seeds.values()])
    cells[(row, "H(mean)")] = _h_of_means(cells[(row, "base")], cells[(row, "new")])


def _h_of_means(base: CellStats, new: CellStats) -> float | None:
    if base.n == 0 or new.n == 0:
        return None
    return harmonic_mean(base.mean, new.mean)


def _open_class_table(dataset: str, values: dict) -> Table:
    cells: dict = {}
    rows = []
    for (_, _, target, method), seeds in values.items():
        row = method if target == "all" else f"{method} / {target}"
        rows.append(row)
        _open_class_cells(seeds, cells, row)
    return Table(
        title=f"open_class / {dataset}: base-to-new accuracy (%)",
        rows=rows,
        columns=["base", "new", "H", "H(mean)"],
        cells=cells,
        note=_H_NOTE,
    )


_H_NOTE = "H: per-seed harmonic mean, then averaged. H(mean): harmonic mean of mean base and new."


def _open_class_average(values: dict) -> Table:
    """Average base, new and H over datasets per seed, then over seeds."""
    cells: dict = {}
    methods = _ordered(k[3] for k in values)
    for method in methods:
        columns = [seeds for k, seeds in values.items() if k[3] == method]
        for metric in ("base", "new", "H"):
            cells[(method, metric)] = cell_stats(_per_seed_average(columns, metric))
        cells[(method, "H(mean)")] = _h_of_means(cells[(method, "base")], cells[(method, "new")])
    datasets = _ordered(k[1] for k in values)
    return Table(
        title=f"open_class / mean over {len(datasets)} datasets ({', '.join(datasets)}) (%)",
        rows=methods,
        columns=["base", "new", "H", "H(mean)"],
        cells=cells,
        note="Averaged over datasets per seed (seeds with every dataset). " + _H_NOTE,
    )


def _wild_table(dataset: str, values: dict) -> Table:
    methods = _ordered(k[3] for k in values)
    targets = _ordered(k[2] for k in values)
    metrics = PROTOCOL_METRICS["in_the_wild"]
    cells: dict = {}
    rows = []
    for method in methods:
        columns = []
        for target in [*targets, AVERAGE]:
            row = f"{method} / {target}"
            if target == AVERAGE:
                seeds = _average_seeds(columns, metrics)
            else:
                seeds = values.get(("in_the_wild", dataset, target, method), {})
                columns.append(seeds)
            rows.append(row)
            for metric in metrics:
                cells[(row, metric)] = cell_stats([m[metric] for m in seeds.values()])
            cells[(row, "H(mean)")] = _h_of_means(cells[(row, "base")], cells[(row, "new")])
    return Table(
        title=f"in_the_wild / {dataset}: target-domain accuracy among all classes (%)",
        rows=rows,
        columns=[*metrics, "H(mean)"],
        cells=cells,
        note="avg: mean over targets per seed (seeds with every target). " + _H_NOTE,
    )


def _average_seeds(columns: list[dict[int, dict]], metrics: Sequence[str]) -> dict[int, dict]:
    if not columns:
        return {}
    seeds = sorted(set.intersection(*(set(c) for c in columns)))
    return {s: {m: float(np.mean([c[s][m] for c in columns])) for m in metrics} for s in seeds}


# --- rendering ----------------------------------------------------------------------


def _cell_text(cell: CellStats | float | None) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, CellStats):
        return cell.format()
    return f"{cell * 100:.1f}"


def to_markdown(tables: list[Table], failures: Sequence[dict] = ()) -> str:
    """Render tables as Markdown, followed by the list of failed runs if any."""
    out = io.StringIO()
    for table in tables:
        out.write(f"### {table.title}\n\n")
        out.write("| method | " + " | ".join(table.columns) + " |\n")
        out.write("|---" * (len(table.columns) + 1) + "|\n")
        for row in table.rows:
            texts = [_cell_text(table.cells.get((row, c))) for c in table.columns]
            out.write(f"| {row} | " + " | ".join(texts) + " |\n")
        out.write(f"\nCells: mean ± standard deviation over seeds (se: standard error). "
                  f"{table.note}\n\n")  # fmt: skip
    if failures:
        out.write(f"### Failed runs ({len(failures)})\n\n")
        for record in failures:
            where = "/".join(str(record[k]) for k in ("protocol", "dataset", "target", "method"))
            out.write(f"- {where}/seed{record['seed']}: {record.get('error', '')}\n")
    return out.getvalue()


def to_csv(tables: list[Table]) -> str:
    """Render every cell as one CSV row with separate mean, std, sem and n columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["table", "row", "column", "mean", "std", "sem", "n"])
    for table in tables:
        for row in table.rows:
            for column in table.columns:
                cell = table.cells.get((row, column))
                if isinstance(cell, CellStats):
                    writer.writerow(
                        [table.title, row, column, cell.mean, cell.std, cell.sem, cell.n]
                    )
                elif cell is not None:
                    writer.writerow([table.title, row, column, cell, "", "", ""])
    return out.getvalue()


def write_tables(out_dir: Path | str) -> tuple[str, Path, Path]:
    """Build tables from ``OUT/results.jsonl``; write ``OUT/results.md`` and ``results.csv``.

    Returns the Markdown text and the two written paths.
    """
    out_dir = Path(out_dir)
    records = load_results(out_dir)
    tables = build_tables(records)
    failures = [r for r in records if r.get("status") != "ok"]
    markdown = to_markdown(tables, failures)
    markdown_path, csv_path = out_dir / "results.md", out_dir / "results.csv"
    write_text_atomic(markdown_path, markdown)
    write_text_atomic(csv_path, to_csv(tables))
    return markdown, markdown_path, csv_path
