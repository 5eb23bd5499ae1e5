"""Training loop: weight averaging, what is trained, balanced batches, optimiser setup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model
from safetensors.torch import load_file

from clipood.averaging import beta_weights
from clipood.data.domainbed import load_domainbed
from clipood.data.samples import ImageSample
from clipood.engine import TrainConfig, fit
from clipood.engine.config import check_device
from clipood.engine.distributed import DistributedContext
from clipood.engine.optim import build_scheduler, cosine_factor, parameter_groups
from clipood.engine.sampling import BalancedBatchSampler, check_batch_size

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**changes) -> TrainConfig:
    settings = {"steps": 5, "batch_size": 3, "lr": 1e-3, "log_every": 1, "seed": 0}
    settings.update(changes)
    return TrainConfig(**settings)


def source_groups(root: Path):
    dataset = load_domainbed(root)
    groups = [dataset.domains["clipart"], dataset.domains["photo"]]
    return dataset, groups


def encoder_parameters(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.image_encoder.named_parameters()}


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_bma_matches_weighted_average(tiny_domainbed, tmp_path, beta):
    dataset, groups = source_groups(tiny_domainbed)
    model = build_tiny_model()
    snapshots = [encoder_parameters(model)]  # step 0: the pretrained weights
    config = small_config(averaging="bma", beta=beta)

    def record(step, trained):
        snapshots.append(encoder_parameters(trained))

    result = fit(model, groups, dataset.classnames, config, tmp_path / "run", on_step=record)

    assert len(snapshots) == config.steps + 1
    weights = beta_weights(config.steps, beta)
    if beta == 1.0:
        np.testing.assert_allclose(weights, np.ones(config.steps + 1))
    for name in snapshots[0]:
        stacked = torch.stack([s[name].double() for s in snapshots])
        w = torch.tensor(weights, dtype=torch.float64).view(-1, *[1] * (stacked.ndim - 1))
        expected = (w * stacked).sum(0) / w.sum()
        torch.testing.assert_close(
            result.averaged_state[name].double(), expected, rtol=1e-5, atol=1e-6
        )
    # The average differs from the last step, so the check above is not trivially met.
    assert not torch.allclose(result.averaged_state["9.weight"], result.final_state["9.weight"])


def test_only_image_encoder_parameters_change(tiny_domainbed, tmp_path):
    dataset, groups = source_groups(tiny_domainbed)
    model = build_tiny_model()
    text_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    buffers_before = {k: v.clone() for k, v in model.image_encoder.named_buffers()}
    params_before = encoder_parameters(model)

    fit(model, groups, dataset.classnames, small_config(), tmp_path / "run")

    for name, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, text_before[name]), name
    for name, value in model.image_encoder.named_buffers():
        assert torch.equal(value, buffers_before[name]), name
    changed = [
        name
        for name, value in model.image_encoder.named_parameters()
        if not torch.equal(value, params_before[name])
    ]
    assert set(changed) == set(params_before)


def test_fit_writes_run_folder(tiny_domainbed, tmp_path):
    dataset, groups = source_groups(tiny_domainbed)
    run = tmp_path / "run"
    config = small_config(eval_every=2, log_every=2)
    result = fit(
        build_tiny_model(),
        groups,
        dataset.classnames,
        config,
        run,
        val_samples=dataset.domains["sketch"],
    )

    description = json.loads((run / "model.json").read_text())
    assert description["classnames"] == dataset.classnames
    assert description["templates"] == ["a photo of a {}."]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records == result.history
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    val_steps = [r["step"] for r in records if r["split"] == "val"]
    assert train_steps == [2, 4, 5]
    assert val_steps == [2, 4, 5]
    for record in records:
        if record["split"] == "val":
            assert 0.0 <= record["accuracy"] <= 1.0
            assert 0.0 <= record["averaged_accuracy"] <= 1.0
    final = load_file(run / "weights" / "final.safetensors")
    averaged = load_file(run / "weights" / "averaged.safetensors")
    for name, value in result.final_state.items():
        assert torch.equal(final[name], value), name
        assert averaged[name].dtype == value.dtype
    assert any((run / "tensorboard").iterdir())
    assert (run / "checkpoint" / "last.pt").is_file()


def test_finished_run_is_not_retrained(tiny_domainbed, tmp_path):
    dataset, groups = source_groups(tiny_domainbed)
    config = small_config(averaging="none")
    first = fit(build_tiny_model(), groups, dataset.classnames, config, tmp_path / "run")
    assert first.averaged_state is None
    assert not (tmp_path / "run" / "weights" / "averaged.safetensors").exists()

    steps_run = []
    model = build_tiny_model()
    again = fit(
        model,
        groups,
        dataset.classnames,
        config,
        tmp_path / "run",
        on_step=lambda step, _: steps_run.append(step),
    )
    assert steps_run == []
    assert again.steps == config.steps
    for name, value in first.final_state.items():
        assert torch.equal(again.final_state[name], value), name
        assert torch.equal(model.image_encoder.state_dict()[name], value), name


def test_fit_rejects_empty_group(tiny_domainbed, tmp_path):
    dataset, groups = source_groups(tiny_domainbed)
    with pytest.raises(ValueError, match="group sizes are"):
        fit(build_tiny_model(), [groups[0], []], dataset.classnames, small_config(), tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"averaging": "swa"}, "unknown averaging 'swa'"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"precision": "fp16"}, "needs a CUDA device"),
        ({"templates": ("a photo",)}, "must contain exactly one '{}'"),
        ({"templates": ("a {} of {}",)}, "must contain exactly one '{}'"),
        ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\), got 1.5"),
        ({"average_device": "nowhere"}, "invalid average_device 'nowhere'"),
        ({"device": "gpu"}, "invalid device 'gpu'"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"steps": 2.5}, "steps must be an integer, got 2.5"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes).validate()


def test_config_single_template_string():
    config = small_config(templates="a sketch of a {}.")
    config.validate()
    assert config.templates == ("a sketch of a {}.",)


def test_fit_rejects_batch_larger_than_group(tiny_domainbed, tmp_path):
    dataset, groups = source_groups(tiny_domainbed)
    groups = [groups[0], groups[1][:4]]  # 18 clipart images, 4 photo images
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        fit(build_tiny_model(), groups, dataset.classnames, small_config(batch_size=5), run_dir)
    message = str(info.value)
    assert "batch_size 5 is larger than the 4 training images of source domain 'photo'" in message
    assert "--batch-size 4" in message
    assert not run_dir.exists()


def test_batch_equal_to_group_size_accepted():
    samples = [ImageSample(Path(f"{i}.png"), 0, "photo") for i in range(4)]
    check_batch_size(4, [samples, samples + samples])
    with pytest.raises(ValueError, match="the training set"):
        check_batch_size(5, [[ImageSample(Path("a.png"), 0)] * 4])
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        check_batch_size(4, [samples], world_size=3)


def test_balanced_batches_cover_each_group():
    sampler = BalancedBatchSampler([5, 3], batch_size=2, seed=1, total_steps=6)
    batches = [[index for index, _ in batch] for batch in sampler]
    assert len(batches) == 6
    first_group = [i for batch in batches for i in batch[:2]]
    second_group = [i for batch in batches for i in batch[2:]]
    assert all(0 <= i < 5 for i in first_group)
    assert all(5 <= i < 8 for i in second_group)
    # Epoch-style: the first 5 draws of group 0 are a permutation of its samples.
    assert sorted(first_group[:5]) == [0, 1, 2, 3, 4]
    assert sorted(second_group[:3]) == [5, 6, 7]
    assert sorted(second_group[3:6]) == [5, 6, 7]


def test_balanced_batches_resume_and_shard():
    full = list(BalancedBatchSampler([7, 4], batch_size=4, seed=3, total_steps=5))
    resumed = list(BalancedBatchSampler([7, 4], batch_size=4, seed=3, total_steps=5, start_step=2))
    assert resumed == full[2:]
    other_seed = list(BalancedBatchSampler([7, 4], batch_size=4, seed=4, total_steps=5))
    assert other_seed != full
    shards = [
        list(BalancedBatchSampler([7, 4], 4, 3, 5, context=DistributedContext(rank, 2)))
        for rank in range(2)
    ]
    for step, batch in enumerate(full):
        together = shards[0][step] + shards[1][step]
        assert sorted(together) == sorted(batch)
        assert len(shards[0][step]) == len(shards[1][step]) == 4


def test_weight_decay_only_on_matrices():
    model = build_tiny_model()
    decayed, undecayed = parameter_groups(model.image_encoder, 0.1)
    assert decayed["weight_decay"] == 0.1
    assert undecayed["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in undecayed["params"])
    total = len(decayed["params"]) + len(undecayed["params"])
    assert total == len(list(model.image_encoder.parameters()))


def test_cosine_schedule_values():
    assert cosine_factor(0, 10, 0) == 1.0
    assert cosine_factor(5, 10, 0) == pytest.approx(0.5)
    assert cosine_factor(10, 10, 0) == pytest.approx(0.0)
    assert cosine_factor(0, 10, 4) == pytest.approx(0.25)
    assert cosine_factor(3, 10, 4) == pytest.approx(1.0)
    assert cosine_factor(4, 10, 4) == pytest.approx(1.0)
    assert cosine_factor(7, 10, 4) == pytest.approx(0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, 4, 0)
    rates = []
    for _ in range(4):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(rates, [2.0 * cosine_factor(s, 4, 0) for s in range(4)])
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(optimizer, 4, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_gpu_rejected():
    with pytest.raises(ValueError, match="'cuda' needs a CUDA GPU") as info:
        check_device("device", "cuda", available=True)
    assert "use --device cpu" in str(info.value)
    with pytest.raises(ValueError, match="'cuda:1' needs a CUDA GPU"):
        check_device("device", "cuda:1", available=True)
    check_device("device", "cpu", available=True)
    # Settings of a GPU recipe still validate on a machine without one.
    TrainConfig(device="cuda").validate()
