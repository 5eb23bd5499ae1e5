"""The ``clipood`` command: run-folder contract, configuration files and input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_tiny_model
from safetensors.torch import load_file

from clipood.cli.config import apply_config
from clipood.cli.main import build_parser
from clipood.experiments.domain_shift import run_domain_shift
from clipood.experiments.in_the_wild import load_multi_domain

pytestmark = pytest.mark.timeout(300)


def clipood(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "clipood.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=cwd,
    )


def check_run_folder(run: Path, averaged: bool) -> dict:
    """Check every file of a finished run folder and return its summary."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert isinstance(config, dict)
    model = json.loads((run / "model.json").read_text())
    assert set(model) == {"spec", "classnames", "templates"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "val", "test"}
    assert all("step" in r for r in records)
    final = load_file(run / "weights" / "final.safetensors")
    assert final
    if averaged:
        assert load_file(run / "weights" / "averaged.safetensors").keys() == final.keys()
    assert (run / "checkpoint" / "last.pt").is_file()
    assert any((run / "tensorboard").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    for numbers in [*summary["by_weights"].values(), *summary["validation"].values()]:
        assert 0.0 <= numbers["accuracy"] <= 1.0
    assert 0.0 <= summary["metrics"]["accuracy"] <= 1.0
    return summary


def test_domain_shift_run_folder(tiny_domainbed, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    overrides = {"steps": 4, "batch_size": 3, "lr": 1e-3, "log_every": 2}
    summary = run_domain_shift(
        build_tiny_model(), tiny_domainbed, "sketch", "clipood", seed=1, run_dir=run,
        overrides=overrides,
    )  # fmt: skip
    assert check_run_folder(run, averaged=True) == summary
    assert summary["seed"] == 1
    assert summary["sources"] == ["clipart", "photo"]
    assert summary["counts"]["test"] == 18
    # 6 images per class and domain, 20% held out per source: 2 x (18 - 3) for training.
    assert summary["counts"]["train"] == [15, 15]
    assert summary["counts"]["validation"] == 6
    assert set(summary["by_weights"]) == {"zeroshot", "final", "averaged"}
    assert set(summary["validation"]) == {"zeroshot", "final", "averaged"}
    assert summary["reported_weights"] == "averaged"
    assert summary["history"] == "metrics.jsonl"
    # A finished run folder is returned as is.
    again = run_domain_shift(build_tiny_model(), tiny_domainbed, "sketch", "clipood", 1, run)
    assert again == summary


def test_manifest_run_records_csv_path(tiny_domainbed, tmp_path):
    torch.set_num_threads(1)
    manifest = tmp_path / "images.csv"
    rows = ["path,label,domain"] + [
        f"{image},{image.parent.name},{image.parent.parent.name}"
        for image in sorted(tiny_domainbed.glob("*/*/*.png"))
    ]
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    overrides = {"steps": 2, "batch_size": 3, "lr": 1e-3}
    summary = run_domain_shift(
        build_tiny_model(), manifest, "sketch", "erm", seed=0, run_dir=run, overrides=overrides
    )
    # eval reads the dataset back from these records, so they name the CSV, not its folder.
    assert summary["dataset_root"] == str(manifest)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == str(manifest)
    reloaded = load_multi_domain(summary["dataset_root"])
    assert reloaded.source == manifest
    assert sorted(reloaded.domains) == ["clipart", "photo", "sketch"]
    assert len(reloaded.domains["sketch"]) == summary["counts"]["test"]


def test_wise_ft_writes_interpolated_weights(tiny_domainbed, tmp_path):
    torch.set_num_threads(1)
    model = build_tiny_model()
    pretrained = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    overrides = {"steps": 2, "batch_size": 2, "lr": 1e-3}
    summary = run_domain_shift(
        model, tiny_domainbed, "photo", "wise-ft", run_dir=tmp_path, overrides=overrides,
        eval_zeroshot=False,
    )  # fmt: skip
    assert summary["reported_weights"] == "wise"
    final = load_file(tmp_path / "weights" / "final.safetensors")
    wise = load_file(tmp_path / "weights" / "averaged.safetensors")
    expected = 0.5 * (pretrained["9.weight"] + final["9.weight"])
    torch.testing.assert_close(wise["9.weight"], expected, rtol=0, atol=1e-7)


def test_config_file_layering(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 1.0e-4\nbatch-size: 8\nmethod: erm\ntemplates: ['a {}.', 'the {}.']\n")
    parser = build_parser()
    argv = ["train", "--config", str(path), "--batch-size", "4"]
    args = apply_config(parser, parser.parse_args(argv), argv)
    assert args.lr == 1e-4
    assert args.batch_size == 4  # the command line wins
    assert args.method == "erm"
    assert args.templates == ["a {}.", "the {}."]

    path.write_text("learning-rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown key 'learning-rate'"):
        apply_config(parser, parser.parse_args(argv), argv)
    path.write_text("method: sgd\n")
    with pytest.raises(ValueError, match="invalid value 'sgd' for 'method'"):
        apply_config(parser, parser.parse_args(argv), argv)


def assert_usage_error(completed, *fragments: str) -> None:
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in completed.stderr, completed.stderr


def test_train_wrong_data_root(tmp_path):
    missing = tmp_path / "nowhere"
    completed = clipood(
        "train", "--data", str(missing), "--target", "photo", "--output", str(tmp_path / "r")
    )
    assert_usage_error(completed, str(missing), "does not exist")


def test_train_unknown_target(tiny_domainbed, tmp_path):
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "cartoon",
        "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert_usage_error(completed, "'cartoon'", "clipart")


def test_train_empty_class_folder(tiny_domainbed, tmp_path):
    empty = tiny_domainbed / "photo" / "zebra"
    empty.mkdir()
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "photo",
        "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert_usage_error(completed, str(empty), "no images")


def test_train_unknown_method(tiny_domainbed, tmp_path):
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "photo", "--method", "sgd",
        "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert_usage_error(completed, "'sgd'")


def test_eval_missing_run_folder(tmp_path):
    completed = clipood("eval", "--run", str(tmp_path / "missing"))
    assert_usage_error(completed, str(tmp_path / "missing"), "not found")


def test_verbose_shows_traceback(tmp_path):
    completed = clipood("-v", "eval", "--run", str(tmp_path / "missing"))
    assert completed.returncode == 2
    assert "Traceback" in completed.stderr


@pytest.mark.slow
def test_train_and_eval_end_to_end(tiny_domainbed, tmp_path):
    env = {"CLIPOOD_CACHE": str(tmp_path / "cache")}
    built = clipood("model", "build", "--quick", env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    run = tmp_path / "run"
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "sketch", "--model", "offline:quick",
        "--output", str(run), "--steps", "3", "--batch-size", "2", "--log-every", "1",
        "--eval-batch-size", "16", env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = check_run_folder(run, averaged=True)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["steps"] == 3
    assert config["method"] == "clipood"
    assert config["margin"] == summary["train_config"]["margin"]

    evaluated = clipood("eval", "--run", str(run), "--output", str(tmp_path / "e.json"), env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((tmp_path / "e.json").read_text())["results"]["sketch"]
    assert result["accuracy"] == pytest.approx(summary["by_weights"]["averaged"]["accuracy"])


def test_train_rejects_corrupt_image_before_training(tiny_domainbed, tmp_path):
    corrupt = tiny_domainbed / "sketch" / "dog" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    run = tmp_path / "run"
    # 15 training images per source: the batch must not exceed them.
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "photo", "--model", "offline:quick",
        "--batch-size", "4", "--output", str(run),
    )  # fmt: skip
    assert_usage_error(completed, str(corrupt), "cannot be read")
    assert not (run / "weights").exists()


def test_train_rejects_infinite_lr(tiny_domainbed, tmp_path):
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "photo", "--lr", "inf",
        "--output", str(tmp_path / "run"),
    )  # fmt: skip
    assert_usage_error(completed, "lr must be a finite number > 0", "inf")


def test_run_config_reusable_as_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("command: train\nverbose: 0\nsteps: 7\n")
    parser = build_parser()
    argv = ["train", "--config", str(config)]
    args = apply_config(parser, parser.parse_args(argv), argv)
    assert args.steps == 7


def test_train_and_experiment_share_default_model():
    from clipood.experiments import runner
    from clipood.experiments.protocol_run import DEFAULT_MODEL

    args = build_parser().parse_args(["train"])
    config = runner.parse_experiment(
        {"output": "out", "protocol": "domain_shift", "datasets": ["PACS"]}
    )
    assert args.model == DEFAULT_MODEL
    assert config.model == DEFAULT_MODEL


def test_train_rejects_batch_larger_than_source(tiny_domainbed, tmp_path):
    run = tmp_path / "run"
    # A model that cannot load: the batch check must come first.
    missing_model = f"hf:{tmp_path / 'no-model'}"
    completed = clipood(
        "train", "--data", str(tiny_domainbed), "--target", "photo", "--model", missing_model,
        "--batch-size", "500", "--output", str(run),
    )  # fmt: skip
    assert_usage_error(
        completed,
        "batch_size 500 is larger than the 15 training images of source domain 'clipart'",
        "--batch-size 15",
    )
    assert not run.exists()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("average_device: nowhere\n", "invalid average_device 'nowhere'"),
        ("method: erm-ema\nema_decay: 1.5\n", "ema_decay must be in [0, 1), got 1.5"),
        ("templates: ['a {} of {}']\n", "must contain exactly one '{}'"),
    ],
)
def test_train_invalid_config_writes_no_folder(tiny_domainbed, tmp_path, config_text, message):
    config = tmp_path / "train.yaml"
    config.write_text("steps: 2\nbatch-size: 2\n" + config_text)
    run = tmp_path / "run"
    completed = clipood(
        "train", "--config", str(config), "--data", str(tiny_domainbed), "--target", "photo",
        "--model", f"hf:{tmp_path / 'no-model'}", "--output", str(run),
    )  # fmt: skip
    assert_usage_error(completed, message)
    assert not run.exists()


def folder_contents(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_rejected_rerun_leaves_run_folder_unchanged(tiny_domainbed, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    overrides = {"steps": 2, "batch_size": 3, "lr": 1e-3}
    run_domain_shift(
        build_tiny_model(), tiny_domainbed, "sketch", "erm", run_dir=run, overrides=overrides,
        eval_zeroshot=False,
    )  # fmt: skip
    before = folder_contents(run)
    assert run / "config.yaml" in before
    common = ["train", "--data", str(tiny_domainbed), "--target", "sketch", "--method", "erm",
              "--model", f"hf:{tmp_path / 'no-model'}", "--output", str(run),
              "--steps", "2", "--batch-size", "3"]  # fmt: skip

    changed = clipood(*common, "--lr", "0.01")
    assert_usage_error(changed, "cannot resume", "lr: saved 0.001, now 0.01")
    assert folder_contents(run) == before

    too_large = clipood(*common, "--lr", "0.001", "--batch-size", "100")
    assert_usage_error(too_large, "batch_size 100 is larger than")
    assert folder_contents(run) == before

    bad_device = clipood(*common, "--lr", "0.001", "--average-device", "nowhere")
    assert_usage_error(bad_device, "invalid average_device 'nowhere'")
    assert folder_contents(run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_cuda_without_gpu_is_usage_error(tmp_path):
    result = clipood("eval", "--run", str(tmp_path / "run"), "--device", "cuda")
    assert result.returncode == 2
    assert "clipood eval: error: --device 'cuda' needs a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr
