"""The OpenCLIP backend on tiny random-weight models written in open_clip's own formats.

``write_tiny_open_clip`` is also used by the export and predict tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clipood.models import load_model
from clipood.models.errors import WeightsNotFoundError
from clipood.models.open_clip_backend import cached_tag_file, register_model_name

IMAGE_SIZE = 32
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": IMAGE_SIZE,
        "layers": 1,
        "width": 32,
        "patch_size": 16,
        "head_width": 16,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# SigLIP-style: a learned logit bias and a custom text tower (CustomTextCLIP).
TINY_SIGLIP_CONFIG = {**TINY_CONFIG, "init_logit_bias": -10.0, "custom_text": True}
LOGIT_SCALE = 50.0


def write_tiny_open_clip(
    folder: Path, name: str = "tinyclip", config: dict | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """Write a model config JSON and a random-weight checkpoint saved with torch.save,
    as open_clip's own checkpoints are; return ``(config_path, checkpoint_path)``."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(config or TINY_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    checkpoint_path = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), checkpoint_path)
    return config_path, checkpoint_path


def gradient_image(width: int = 50, height: int = 40) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    pixels = np.stack([x, y, np.full_like(x, 128.0)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def tiny_open_clip(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_open_clip(tmp_path / "tiny")


def native_model(name: str, checkpoint: Path):
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    return model.eval(), preprocess


def test_load_matches_native_open_clip(tiny_open_clip):
    config_path, checkpoint = tiny_open_clip
    model = load_model(f"open_clip:{config_path}:{checkpoint}").eval()
    native, _ = native_model("tinyclip", checkpoint)
    images = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    tokens = open_clip.get_tokenizer("tinyclip")(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(images, normalize=False), native.encode_image(images)
        )
        expected_text = native.encode_text(tokens)
    torch.testing.assert_close(
        model.encode_text(["a photo of a cat.", "a dog"], normalize=False), expected_text
    )
    assert model.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-6)
    assert model.logit_bias is None


def test_spec_keeps_config_path(tiny_open_clip):
    config_path, checkpoint = tiny_open_clip
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    assert model.spec.name == str(config_path)
    assert model.spec.pretrained == str(checkpoint)


def test_eval_transform_is_open_clips(tiny_open_clip):
    config_path, checkpoint = tiny_open_clip
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    _, preprocess = native_model("tinyclip", checkpoint)
    image = gradient_image()
    torch.testing.assert_close(model.eval_transform(image), preprocess(image))
    assert model.train_transform(image).shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_only_image_tower_trains(tiny_open_clip):
    config_path, checkpoint = tiny_open_clip
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    assert all(p.requires_grad for p in model.image_encoder.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    image_params = {id(p) for p in model.image_encoder.parameters()}
    assert not image_params & {id(p) for p in model.text_encoder.parameters()}


def test_logit_bias_custom_text(tmp_path):
    config_path, checkpoint = write_tiny_open_clip(
        tmp_path / "siglip", name="tinybiasclip", config=TINY_SIGLIP_CONFIG
    )
    model = load_model(f"open_clip:{config_path}:{checkpoint}").eval()
    native, _ = native_model("tinybiasclip", checkpoint)
    assert type(native).__name__ == "CustomTextCLIP"
    assert model.logit_bias == pytest.approx(-10.0)
    tokens = open_clip.get_tokenizer("tinybiasclip")(["a cat"])
    with torch.no_grad():
        expected = native.encode_text(tokens)
    torch.testing.assert_close(model.encode_text(["a cat"], normalize=False), expected)


def test_random_weights_without_pretrained(tiny_open_clip):
    config_path, _ = tiny_open_clip
    model = load_model(f"open_clip:{config_path}")
    assert model.spec.pretrained is None
    assert model.encode_image(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape == (1, 32)


def test_unknown_model_name_suggests_close():
    with pytest.raises(ValueError, match="ViT-B-16") as info:
        load_model("open_clip:ViT-B-61:openai")
    assert "unknown OpenCLIP model 'ViT-B-61'" in str(info.value)


def test_unknown_tag_lists_tags():
    with pytest.raises(FileNotFoundError, match="neither a known tag") as info:
        load_model("open_clip:ViT-B-16:no_such_tag")
    assert "openai" in str(info.value)


def test_config_json_without_keys(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ValueError, match="vision_cfg"):
        register_model_name(str(path))


def test_checkpoint_of_other_architecture(tmp_path, tiny_open_clip):
    _, checkpoint = tiny_open_clip
    other = {**TINY_CONFIG, "embed_dim": 16}
    other_path = tmp_path / "tinyother.json"
    other_path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="cannot build OpenCLIP model"):
        load_model(f"open_clip:{other_path}:{checkpoint}")


def fake_hub_cache(cache: Path, repo_id: str, filename: str, payload: Path) -> Path:
    """Lay out ``payload`` as huggingface_hub stores a downloaded file."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    target = snapshot / filename
    target.write_bytes(payload.read_bytes())
    return target


def test_cached_tag_prefers_safetensors(tmp_path, tiny_open_clip):
    _, checkpoint = tiny_open_clip
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "org/tiny", "open_clip_pytorch_model.bin", checkpoint)
    assert cached_tag_file({"hf_hub": "org/tiny/"}, str(cache)).endswith(".bin")
    safetensors = fake_hub_cache(cache / "b", "org/tiny", "open_clip_model.safetensors", checkpoint)
    assert cached_tag_file({"hf_hub": "org/tiny/"}, str(cache / "b")) == str(safetensors)


def test_cached_tag_url_and_absent(tmp_path, tiny_open_clip):
    _, checkpoint = tiny_open_clip
    url_cfg = {"url": "https://example.invalid/weights/tiny.pt"}
    assert cached_tag_file(url_cfg, str(tmp_path)) is None
    (tmp_path / "tiny.pt").write_bytes(checkpoint.read_bytes())
    assert cached_tag_file(url_cfg, str(tmp_path)) == str(tmp_path / "tiny.pt")
    assert cached_tag_file({"hf_hub": "org/absent/"}, str(tmp_path / "hub")) is None


def test_cached_tag_loads_with_tag_settings(tmp_path, tiny_open_clip, monkeypatch):
    """A tag whose weights sit in the hub cache loads from there with the tag's
    preprocessing and QuickGELU setting, as open_clip would after downloading it."""
    config_path, checkpoint = tiny_open_clip
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "org/tiny", "open_clip_pytorch_model.bin", checkpoint)
    tag = {"hf_hub": "org/tiny/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    tag.update(interpolation="bilinear", resize_mode="shortest", quick_gelu=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tinyclip", {"faketag": tag})
    model = load_model(f"open_clip:{config_path}:faketag", cache_dir=str(cache))
    mlp = model.text_encoder.model.transformer.resblocks[0].mlp
    assert type(mlp.gelu).__name__ == "QuickGELU"
    assert model.model_config["quick_gelu"] is True
    normalize = model.eval_transform.transforms[-1]
    assert tuple(normalize.mean) == (0.5, 0.5, 0.5)
    assert tuple(normalize.std) == (0.25, 0.25, 0.25)


OFFLINE_SCRIPT = """
from clipood.models import load_model
from clipood.models.errors import WeightsNotFoundError
try:
    load_model("open_clip:ViT-B-16:openai")
except WeightsNotFoundError as err:
    print(err)
else:
    raise SystemExit("loaded without weights")
"""


def test_missing_weights_offline_error(tmp_path):
    """With empty caches and offline mode the error names the model, the folders and the
    local-path fix, and no library traceback is printed."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "open_clip:ViT-B-16:openai" in message
    assert str(tmp_path / "hf" / "hub") in message
    assert str(tmp_path / ".cache" / "clip") in message
    assert "--model open_clip:ViT-B-16-quickgelu:/path/to/open_clip_pytorch_model.bin" in message
    assert "Traceback" not in result.stderr


def test_error_class_is_file_not_found():
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
