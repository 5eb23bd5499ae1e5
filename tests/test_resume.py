"""Resuming an interrupted run gives the same weights and records as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model

from clipood.data.domainbed import load_domainbed
from clipood.engine import TrainConfig, fit
from clipood.engine.checkpoint import load_training_state
from clipood.engine.run_folder import RunFolder
from clipood.engine.train import check_resumable

pytestmark = pytest.mark.timeout(120)


class Interrupted(RuntimeError):
    pass


def interrupt_at(stop_step: int):
    def callback(step, model):
        if step == stop_step:
            raise Interrupted(f"stopped at step {step}")

    return callback


def resume_config(**changes) -> TrainConfig:
    settings = {
        "steps": 6,
        "batch_size": 3,
        "lr": 1e-3,
        "checkpoint_every": 3,
        "log_every": 1,
        "eval_every": 2,
        "averaging": "bma",
    }
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture
def data(tiny_domainbed):
    torch.set_num_threads(1)
    dataset = load_domainbed(tiny_domainbed)
    groups = [dataset.domains["clipart"], dataset.domains["photo"]]
    return dataset, groups, dataset.domains["sketch"]


def test_resume_is_bit_identical(data, tmp_path):
    dataset, groups, val = data
    config = resume_config()
    straight = fit(build_tiny_model(), groups, dataset.classnames, config, tmp_path / "a", val)

    with pytest.raises(Interrupted):
        fit(
            build_tiny_model(),
            groups,
            dataset.classnames,
            config,
            tmp_path / "b",
            val,
            on_step=interrupt_at(5),
        )
    saved = load_training_state(tmp_path / "b" / "checkpoint" / "last.pt")
    assert saved["step"] == 3
    # Shifted image weights prove that training continues from the checkpoint's weights.
    fresh = build_tiny_model()
    with torch.no_grad():
        for param in fresh.image_encoder.parameters():
            param.add_(1.0)
    resumed = fit(fresh, groups, dataset.classnames, config, tmp_path / "b", val)

    assert resumed.steps == straight.steps == 6
    for name, value in straight.final_state.items():
        assert torch.equal(resumed.final_state[name], value), name
        assert torch.equal(resumed.averaged_state[name], straight.averaged_state[name]), name
    assert resumed.history == straight.history
    lines_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines_b] == [json.loads(x)["step"] for x in lines_a]


def train_until_interrupted(data, run_dir) -> None:
    """Train with ``resume_config()`` and stop after step 4, leaving a checkpoint."""
    dataset, groups, _ = data
    with pytest.raises(Interrupted):
        fit(
            build_tiny_model(),
            groups,
            dataset.classnames,
            resume_config(),
            run_dir,
            on_step=interrupt_at(4),
        )


def test_resume_rejects_changed_settings(data, tmp_path):
    dataset, groups, _ = data
    train_until_interrupted(data, tmp_path)
    with pytest.raises(ValueError, match=r"lr: saved 0\.001, now 0\.002"):
        fit(build_tiny_model(), groups, dataset.classnames, resume_config(lr=2e-3), tmp_path)
    # Settings that do not shape the weights may change.
    result = fit(
        build_tiny_model(), groups, dataset.classnames, resume_config(eval_every=0), tmp_path
    )
    assert result.steps == 6


def test_no_resume_starts_over(data, tmp_path):
    dataset, groups, _ = data
    config = resume_config()
    first = fit(build_tiny_model(), groups, dataset.classnames, config, tmp_path)
    steps_run = []
    again = fit(
        build_tiny_model(),
        groups,
        dataset.classnames,
        config,
        tmp_path,
        resume=False,
        on_step=lambda step, _: steps_run.append(step),
    )
    assert steps_run == [1, 2, 3, 4, 5, 6]
    for name, value in first.final_state.items():
        assert torch.equal(again.final_state[name], value), name


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_checkpoint_named_in_error(data, tmp_path, damage):
    dataset, groups, _ = data
    train_until_interrupted(data, tmp_path)
    checkpoint = RunFolder(tmp_path).checkpoint
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(b"" if damage == "empty" else content[: len(content) // 2])
    with pytest.raises(ValueError, match="cannot read the checkpoint") as info:
        check_resumable(tmp_path, resume_config())
    assert str(checkpoint) in str(info.value)
    assert "--no-resume" in str(info.value)
    with pytest.raises(ValueError, match="the file is damaged"):
        fit(build_tiny_model(), groups, dataset.classnames, resume_config(), tmp_path)
