"""Result tables: rows for the final weights of runs that report averaged weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipood.experiments.tables import build_tables, to_markdown


def wild_record(method, seed, metrics, final=None):
    out = {
        "protocol": "in_the_wild",
        "dataset": "offline-wild",
        "target": "sketch",
        "method": method,
        "seed": seed,
        "status": "ok",
        "metrics": metrics,
    }
    if final is not None:
        out["final_metrics"] = final
    return out


def metrics(base, new):
    return {"base": base, "new": new, "total": (base + new) / 2, "H": 2 * base * new / (base + new)}


def test_final_weights_row_follows_its_method():
    records = [
        wild_record("erm", 0, metrics(0.5, 0.25)),
        wild_record("clipood", 0, metrics(0.4, 0.2), final=metrics(0.6, 0.3)),
        wild_record("clipood", 1, metrics(0.2, 0.4), final=metrics(0.8, 0.1)),
    ]
    (table,) = build_tables(records)
    assert table.rows[:3] == ["erm / sketch", "erm / avg", "clipood / sketch"]
    assert "clipood (final weights) / sketch" in table.rows
    final_base = table.cells[("clipood (final weights) / sketch", "base")]
    assert final_base.n == 2
    assert final_base.mean == pytest.approx(0.7)
    assert final_base.std == pytest.approx(0.1414213562373095)
    reported_new = table.cells[("clipood / sketch", "new")]
    assert reported_new.mean == pytest.approx(0.3)
    assert ("erm (final weights) / sketch", "base") not in table.cells


def test_domain_table_final_row_averages_over_targets():
    records = []
    for target, final in (("photo", 0.9), ("sketch", 0.5)):
        records.append({
            "protocol": "domain_shift", "dataset": "PACS", "target": target,
            "method": "clipood", "seed": 0, "status": "ok",
            "metrics": {"accuracy": 0.6}, "final_metrics": {"accuracy": final},
        })  # fmt: skip
    (table,) = build_tables(records)
    assert table.rows == ["clipood", "clipood (final weights)"]
    assert table.cells[("clipood (final weights)", "avg")].mean == pytest.approx(0.7)
    assert "| clipood (final weights) | 90.0 (n=1) | 50.0 (n=1) | 70.0 (n=1) |" in to_markdown(
        [table]
    )


def test_runner_records_final_weights_of_averaging_runs(tmp_path):
    from conftest import build_tiny_model
    from test_runner import TINY_SPEC, wild_config

    from clipood.experiments import runner
    from clipood.experiments.tables import load_results, write_tables

    config = wild_config(tmp_path, methods=["erm", "clipood"], seeds=[0])
    runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    records = {r["method"]: r for r in load_results(config.output)}
    assert "final_metrics" not in records["erm"]
    clipood = records["clipood"]
    summary = json.loads((Path(clipood["run_dir"]) / "summary.json").read_text())
    assert summary["reported_weights"] == "averaged"
    assert clipood["final_metrics"] == pytest.approx(summary["by_weights"]["final"])
    assert clipood["metrics"] == pytest.approx(summary["by_weights"]["averaged"])
    markdown, _, _ = write_tables(config.output)
    assert "| clipood (final weights) / sketch |" in markdown
