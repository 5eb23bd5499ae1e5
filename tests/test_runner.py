"""Experiment runner and result tables: statistics, skip on rerun, failures recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, write_tiny_domainbed

from clipood.experiments import runner
from clipood.experiments.tables import (
    build_tables,
    cell_stats,
    harmonic_mean,
    load_results,
    to_csv,
    to_markdown,
)
from clipood.models.base import ModelSpec

TINY_SPEC = ModelSpec("tiny", "tiny")


def record(protocol, dataset, target, method, seed, **metrics):
    return {
        "protocol": protocol,
        "dataset": dataset,
        "target": target,
        "method": method,
        "seed": seed,
        "status": "ok",
        "metrics": metrics,
    }


def test_cell_stats_exact():
    cell = cell_stats([0.80, 0.84, 0.90])
    assert cell.n == 3
    assert cell.mean == pytest.approx(0.8466666666666667, abs=1e-12)
    # Sample standard deviation (ddof=1): sqrt(sum((x - mean)^2) / 2).
    expected_std = math.sqrt(((0.8 - 0.84666667) ** 2 + (0.84 - 0.84666667) ** 2
                              + (0.9 - 0.84666667) ** 2) / 2)  # fmt: skip
    assert cell.std == pytest.approx(expected_std, abs=1e-7)
    assert cell.sem == pytest.approx(expected_std / math.sqrt(3), abs=1e-7)


def test_cell_stats_single_and_empty():
    single = cell_stats([0.5])
    assert single.n == 1
    assert single.mean == 0.5
    assert math.isnan(single.std)
    assert single.format() == "50.0 (n=1)"
    assert cell_stats([]).n == 0
    assert cell_stats([]).format() == "-"


def test_harmonic_mean_formula():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4, abs=1e-15)
    assert harmonic_mean(1.0, 0.0) == 0.0


def test_domain_table_average_per_seed():
    records = [
        record("domain_shift", "PACS", "photo", "erm", 0, accuracy=0.9),
        record("domain_shift", "PACS", "photo", "erm", 1, accuracy=0.8),
        record("domain_shift", "PACS", "sketch", "erm", 0, accuracy=0.5),
        record("domain_shift", "PACS", "sketch", "erm", 1, accuracy=0.7),
    ]
    (table,) = build_tables(records)
    assert table.columns == ["photo", "sketch", "avg"]
    photo = table.cells[("erm", "photo")]
    assert photo.mean == pytest.approx(0.85)
    assert photo.std == pytest.approx(np.std([0.9, 0.8], ddof=1))
    average = table.cells[("erm", "avg")]
    # Per-seed averages are 0.7 and 0.75.
    assert average.mean == pytest.approx(0.725)
    assert average.std == pytest.approx(np.std([0.7, 0.75], ddof=1))
    assert average.n == 2


def test_open_class_h_per_seed_and_of_means():
    records = [
        record("open_class", "OxfordPets", "all", "clipood", 0, base=0.9, new=0.5,
               H=harmonic_mean(0.9, 0.5)),
        record("open_class", "OxfordPets", "all", "clipood", 1, base=0.7, new=0.7,
               H=harmonic_mean(0.7, 0.7)),
    ]  # fmt: skip
    (table,) = build_tables(records)
    h_per_seed = table.cells[("clipood", "H")]
    assert h_per_seed.mean == pytest.approx((harmonic_mean(0.9, 0.5) + 0.7) / 2)
    assert table.cells[("clipood", "H(mean)")] == pytest.approx(harmonic_mean(0.8, 0.6))
    assert table.cells[("clipood", "base")].mean == pytest.approx(0.8)


def test_open_class_average_over_datasets():
    records = [
        record("open_class", "A", "all", "erm", 0, base=0.9, new=0.5, H=0.6),
        record("open_class", "B", "all", "erm", 0, base=0.7, new=0.3, H=0.4),
    ]
    tables = build_tables(records)
    assert len(tables) == 3
    average = tables[-1]
    assert average.cells[("erm", "base")].mean == pytest.approx(0.8)
    assert average.cells[("erm", "H")].mean == pytest.approx(0.5)


def test_in_the_wild_table_rows():
    records = [
        record("in_the_wild", "OfficeHome", "Art", "clipood", 0, base=0.8, new=0.6,
               total=0.7, H=harmonic_mean(0.8, 0.6)),
        record("in_the_wild", "OfficeHome", "Clipart", "clipood", 0, base=0.6, new=0.4,
               total=0.5, H=harmonic_mean(0.6, 0.4)),
    ]  # fmt: skip
    (table,) = build_tables(records)
    assert table.rows == ["clipood / Art", "clipood / Clipart", "clipood / avg"]
    assert table.cells[("clipood / avg", "total")].mean == pytest.approx(0.6)
    assert table.cells[("clipood / avg", "base")].mean == pytest.approx(0.7)


def test_markdown_and_csv_render(tmp_path):
    records = [
        record("domain_shift", "PACS", "photo", "erm", 0, accuracy=0.9),
        record("domain_shift", "PACS", "photo", "erm", 1, accuracy=0.8),
        {**record("domain_shift", "PACS", "photo", "clipood", 0), "status": "error",
         "error": "RuntimeError: boom"},
    ]  # fmt: skip
    tables = build_tables(records)
    failures = [r for r in records if r["status"] != "ok"]
    markdown = to_markdown(tables, failures)
    assert "| erm | 85.0 ± 7.1 (se 5.0, n=2) | 85.0 ± 7.1 (se 5.0, n=2) |" in markdown
    assert "Failed runs (1)" in markdown
    assert "RuntimeError: boom" in markdown
    rows = to_csv(tables).splitlines()
    assert rows[0] == "table,row,column,mean,std,sem,n"
    assert len(rows) == 3


def test_load_results_last_record_wins(tmp_path):
    first = record("domain_shift", "PACS", "photo", "erm", 0, accuracy=0.1)
    second = record("domain_shift", "PACS", "photo", "erm", 0, accuracy=0.2)
    lines = [json.dumps(first), json.dumps(second)]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    (loaded,) = load_results(tmp_path)
    assert loaded["metrics"]["accuracy"] == 0.2
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        load_results(tmp_path / "nowhere")


# --- the runner on tiny trees -------------------------------------------------------

FAST = {"steps": 2, "batch_size": 3, "lr": 1e-3, "margin": 0.05, "eval_batch_size": 32}
PACS_DOMAINS = ("art_painting", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "guitar", "horse")


def wild_config(tmp_path, **extra):
    write_tiny_domainbed(tmp_path / "data" / "PACS", images_per_class=4,
                         domains=PACS_DOMAINS, classes=PACS_CLASSES)  # fmt: skip
    data = {
        "model": "offline",
        "output": str(tmp_path / "out"),
        "data_root": str(tmp_path / "data"),
        "seeds": [0, 1],
        "methods": ["zeroshot", "erm"],
        "overrides": FAST,
        "protocol": "in_the_wild",
        "datasets": ["PACS"],
        "targets": ["sketch"],
        **extra,
    }
    return runner.parse_experiment(data)


class CountingFactory:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return build_tiny_model()


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_grid_expansion_and_folders(tmp_path):
    config = wild_config(tmp_path, targets="all")
    runs = runner.expand_grid(config)
    # PACS domains come from the registry: four targets x two methods x two seeds.
    assert len(runs) == 4 * 2 * 2
    assert (
        runs[0].folder(config.output)
        == tmp_path / "out/in_the_wild/PACS/art_painting/zeroshot/seed0"
    )


def test_runner_skips_finished_runs(tmp_path):
    config = wild_config(tmp_path)
    factory = CountingFactory()
    report = runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=factory, progress=False
    )
    assert report.finished == 4
    assert report.failed == []
    assert factory.calls == 1
    records = load_results(config.output)
    assert len(records) == 4
    assert {r["status"] for r in records} == {"ok"}
    assert {r["seed"] for r in records} == {0, 1}
    assert set(records[0]["metrics"]) >= {"base", "new", "total", "H"}
    before = snapshot(config.output / "in_the_wild")

    second = CountingFactory()
    again = runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=second, progress=False
    )
    assert again.skipped == 4
    assert again.finished == 0
    assert second.calls == 0
    assert snapshot(config.output / "in_the_wild") == before
    assert len(load_results(config.output)) == 4


def test_repeated_grid_entries_run_once(tmp_path):
    config = wild_config(tmp_path, seeds=[0, 0, 1], methods=["erm", "erm"], targets=["sketch"] * 2)
    runs = runner.expand_grid(config)
    assert [(r.target, r.method, r.seed) for r in runs] == [
        ("sketch", "erm", 0),
        ("sketch", "erm", 1),
    ]
    with pytest.raises(ValueError, match=r"seeds must be >= 0, got \[-1\]"):
        wild_config(tmp_path, seeds=[0, -1])


def test_rerun_with_other_settings_rejected(tmp_path):
    config = wild_config(tmp_path, methods=["erm"], seeds=[0])
    runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    changed = wild_config(tmp_path, methods=["erm"], seeds=[0], overrides={**FAST, "steps": 3})
    factory = CountingFactory()
    expected = r"contains a run trained with other settings \(steps: saved 2, now 3\)"
    with pytest.raises(ValueError, match=expected):
        runner.run_experiment(changed, model_spec=TINY_SPEC, model_factory=factory, progress=False)
    assert factory.calls == 0
    # An interrupted run (checkpoint, no summary) is checked against its checkpoint.
    run_dir = runner.expand_grid(config)[0].folder(config.output)
    (run_dir / "summary.json").unlink()
    with pytest.raises(ValueError, match=expected):
        runner.check_grid(changed, runner.expand_grid(changed), TINY_SPEC)
    # The same settings still resume and finish.
    report = runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    assert report.finished == 1
    assert report.failed == []


def test_per_run_settings_not_overridable(tmp_path):
    for name, value in (("seed", 5), ("device", "cpu")):
        config = wild_config(tmp_path, overrides={**FAST, name: value})
        with pytest.raises(ValueError, match=f"'{name}' cannot be overridden"):
            runner.check_grid(config, runner.expand_grid(config))
    assert not (tmp_path / "out").exists()


def test_failed_run_recorded_and_others_continue(tmp_path):
    # A batch larger than a source's base-class images fails each training run as it
    # starts: the data, not the settings, decides that, so the grid itself is valid.
    config = wild_config(tmp_path, methods=["erm"], overrides={**FAST, "batch_size": 50})
    good = wild_config(tmp_path, methods=["zeroshot"])
    report = runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    assert len(report.failed) == 2
    runner.run_experiment(
        good, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    records = load_results(config.output)
    statuses = sorted((r["method"], r["status"]) for r in records)
    assert statuses == [("erm", "error"), ("erm", "error"), ("zeroshot", "ok"), ("zeroshot", "ok")]
    error = next(r for r in records if r["status"] == "error")
    assert "batch_size 50 is larger than" in error["error"]
    with pytest.raises(ValueError, match="batch_size 50 is larger than"):
        runner.run_experiment(config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False,
                              fail_fast=True)  # fmt: skip


def test_invalid_setting_rejected_before_any_run(tmp_path):
    config = wild_config(tmp_path, methods=["erm"], overrides={**FAST, "margin": -1.0})
    factory = CountingFactory()
    with pytest.raises(ValueError, match="margin must be a finite number >= 0, got -1.0"):
        runner.run_experiment(config, model_spec=TINY_SPEC, model_factory=factory, progress=False)
    assert factory.calls == 0
    assert not config.output.exists()


def test_unknown_setting_key_lists_valid_ones(tmp_path):
    config = wild_config(tmp_path, overrides={**FAST, "lrr": 1e-5})
    with pytest.raises(ValueError, match="unknown training setting") as info:
        runner.check_grid(config, runner.expand_grid(config))
    assert "'lrr'" in str(info.value)
    assert "lr, margin" in str(info.value)
    assert not config.output.exists()


def test_unknown_target_lists_domains(tmp_path):
    config = wild_config(tmp_path, targets=["sketch", "painting"])
    with pytest.raises(ValueError, match="unknown target domain 'painting'") as info:
        runner.run_experiment(
            config, model_spec=TINY_SPEC, model_factory=CountingFactory(), progress=False
        )
    # PACS is a registry name, so its domains come from the registry.
    assert "art_painting, cartoon, photo, sketch" in str(info.value)
    assert not config.output.exists()


def test_unknown_target_of_folder_dataset(tmp_path):
    write_tiny_domainbed(tmp_path / "data" / "mine", images_per_class=2)
    config = runner.parse_experiment(
        {"output": str(tmp_path / "out"), "data_root": str(tmp_path / "data"),
         "protocol": "domain_shift", "datasets": ["mine"], "targets": ["cartoon"]}
    )  # fmt: skip
    with pytest.raises(ValueError, match="available domains: clipart, photo, sketch"):
        runner.check_grid(config, runner.expand_grid(config))


def test_model_defaults_to_offline(tmp_path):
    from clipood.experiments.protocol_run import DEFAULT_MODEL

    config = runner.parse_experiment(
        {"output": str(tmp_path), "protocol": "open_class", "datasets": ["DTD"]}
    )
    assert DEFAULT_MODEL == "offline"
    assert config.model == DEFAULT_MODEL


def test_results_table_from_runner(tmp_path):
    config = wild_config(tmp_path, methods=["zeroshot"])
    runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    from clipood.experiments.tables import write_tables

    markdown, markdown_path, csv_path = write_tables(config.output)
    assert "in_the_wild / PACS" in markdown
    assert "zeroshot / sketch" in markdown
    assert markdown_path.is_file()
    assert csv_path.read_text().startswith("table,row,column,mean,std,sem,n")
    # Zero-shot evaluation does not depend on the seed, so the spread is exactly zero.
    records = load_results(config.output)
    assert records[0]["metrics"] == records[1]["metrics"]


def test_unset_data_root_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPOOD_DATA_MISSING", raising=False)
    with pytest.raises(ValueError, match="CLIPOOD_DATA_MISSING"):
        runner.parse_experiment({"model": "offline", "output": str(tmp_path),
                                 "data_root": "${CLIPOOD_DATA_MISSING}",
                                 "protocol": "open_class", "datasets": ["DTD"]})  # fmt: skip


# Runs the real ``clipood`` entry point in a fresh interpreter.
CLI_SCRIPT = "import sys; from clipood.cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_model_options_parsed(tmp_path):
    config = runner.parse_experiment(
        {"model": "offline", "output": str(tmp_path), "model_options": {"image_size": 128},
         "protocol": "open_class", "datasets": ["DTD"]}
    )  # fmt: skip
    assert config.model_options == {"image_size": 128}


def test_cli_dry_run_and_table(tmp_path):
    import subprocess
    import sys

    config = wild_config(tmp_path, methods=["zeroshot"])
    runner.run_experiment(
        config, model_spec=TINY_SPEC, model_factory=build_tiny_model, progress=False
    )
    common = [sys.executable, "-c", CLI_SCRIPT, "experiment"]
    dry = subprocess.run(
        [*common, "run", "--model", "offline", "--output", str(config.output),
         "--data-root", str(tmp_path / "data"), "--protocol", "in_the_wild",
         "--dataset", "PACS", "--targets", "sketch", "photo", "--methods", "zeroshot",
         "--seeds", "0", "1", "--set", "lr=5e-6", "--dry-run"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "4 runs" in dry.stdout
    assert dry.stdout.count("done") == 2
    table = subprocess.run([*common, "table", str(config.output)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "zeroshot / sketch" in table.stdout


def run_experiment_cli(*args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, "experiment", "run", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_cli_dry_run_checks_settings_and_targets(tmp_path):
    write_tiny_domainbed(tmp_path / "data" / "PACS", images_per_class=2,
                         domains=PACS_DOMAINS, classes=PACS_CLASSES)  # fmt: skip
    output = tmp_path / "out"
    # No --model: the grid uses the offline model, as ``clipood train`` does.
    common = ["--output", str(output), "--data-root", str(tmp_path / "data"),
              "--protocol", "domain_shift", "--dataset", "PACS", "--methods", "erm"]  # fmt: skip

    valid = run_experiment_cli(*common, "--targets", "photo", "--set", "steps=3", "--dry-run")
    assert valid.returncode == 0, valid.stderr
    assert "1 runs" in valid.stdout

    bad_key = run_experiment_cli(*common, "--targets", "photo", "--set", "stepz=3", "--dry-run")
    assert bad_key.returncode == 2, bad_key.stderr
    assert "unknown training setting(s) 'stepz'" in bad_key.stderr
    assert "steps" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr

    bad_value = run_experiment_cli(*common, "--targets", "photo", "--set", "lr=abc", "--dry-run")
    assert bad_value.returncode == 2, bad_value.stderr
    assert "lr must be a number, got 'abc'" in bad_value.stderr

    no_value = run_experiment_cli(*common, "--targets", "photo", "--set", "steps", "--dry-run")
    assert no_value.returncode == 2, no_value.stderr
    assert "clipood experiment: error: --set 'steps': expected KEY=VALUE" in no_value.stderr

    bad_target = run_experiment_cli(*common, "--targets", "photo", "painting", "--dry-run")
    assert bad_target.returncode == 2, bad_target.stderr
    assert "unknown target domain 'painting'" in bad_target.stderr
    assert "art_painting, cartoon, photo, sketch" in bad_target.stderr

    # A real run checks the same way before it writes anything.
    real = run_experiment_cli(*common, "--targets", "painting")
    assert real.returncode == 2, real.stderr
    assert "unknown target domain 'painting'" in real.stderr
    assert not output.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_grid_needs_gpu_to_run(tmp_path):
    config = wild_config(tmp_path, device="cuda")
    runner.check_grid(config, runner.expand_grid(config), TINY_SPEC)
    factory = CountingFactory()
    with pytest.raises(ValueError, match="device 'cuda' needs a CUDA GPU"):
        runner.run_experiment(config, model_spec=TINY_SPEC, model_factory=factory, progress=False)
    assert factory.calls == 0
    assert not config.output.exists()
