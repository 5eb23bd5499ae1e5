"""Fine-tune tiny models for a few steps, export them, and reload the export with the
native library alone (in a subprocess that never imports clipood)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_hf_backend import write_tiny_hf_clip, write_tiny_hf_siglip
from test_open_clip_backend import IMAGE_SIZE, write_tiny_open_clip
from test_predict import run_cli, write_run_folder

from clipood.losses import MarginMetricSoftmax
from clipood.models import load_model

CLASSES = ["cat", "dog", "horse"]
ATOL = 1e-5


def finetune(model, steps: int = 3) -> None:
    """Train the image tower with margin metric softmax and AdamW on random images."""
    torch.manual_seed(0)
    text = model.class_embeddings(CLASSES)
    loss_fn = MarginMetricSoftmax(margin=0.1)
    optimizer = torch.optim.AdamW(model.image_encoder.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        images = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE)
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        loss = loss_fn(model.encode_image(images), text, labels, model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def write_reference(model, folder: Path) -> Path:
    """Save probe images and the model's image and text embeddings for the subprocess."""
    torch.manual_seed(1)
    images = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        image_embeddings = model.encode_image(images, normalize=False)
    text_embeddings = model.encode_text(["a photo of a cat."], normalize=False)
    path = folder / "reference.safetensors"
    save_file({"images": images, "image": image_embeddings, "text": text_embeddings}, str(path))
    return path


def run_native(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter and return the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


OPEN_CLIP_RELOAD = """
import json, sys
import open_clip, torch
from safetensors.torch import load_file
folder, reference, config = sys.argv[1:4]
ref = load_file(reference)
open_clip.add_model_config(config)
by_folder = open_clip.create_model("local-dir:" + folder).eval()
name = config.rsplit("/", 1)[-1][:-5]
by_file = open_clip.create_model(name, pretrained=folder + "/open_clip_model.safetensors").eval()
tokens = open_clip.get_tokenizer("local-dir:" + folder)(["a photo of a cat."])
with torch.no_grad():
    out = {
        "image_folder": (by_folder.encode_image(ref["images"]) - ref["image"]).abs().max().item(),
        "image_file": (by_file.encode_image(ref["images"]) - ref["image"]).abs().max().item(),
        "text": (by_folder.encode_text(tokens) - ref["text"]).abs().max().item(),
        "logit_scale": by_folder.logit_scale.exp().item(),
        "clipood_imported": "clipood" in sys.modules,
    }
print(json.dumps(out))
"""


def test_open_clip_export_reloads_natively(tmp_path):
    config_path, checkpoint = write_tiny_open_clip(tmp_path / "tiny", name="tinyexport")
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    finetune(model)
    state = model.image_encoder.state_dict()
    assert any(not torch.equal(before[k], state[k]) for k in state)
    reference = write_reference(model, tmp_path)
    folder = model.export(state, tmp_path / "exported")
    assert (folder / "open_clip_model.safetensors").is_file()
    out = run_native(OPEN_CLIP_RELOAD, str(folder), str(reference), str(config_path))
    assert out["clipood_imported"] is False
    assert out["image_folder"] <= ATOL
    assert out["image_file"] <= ATOL
    assert out["text"] <= ATOL
    assert out["logit_scale"] == pytest.approx(model.logit_scale, rel=1e-6)


def test_open_clip_export_writes_given_state(tmp_path):
    """Export writes the state it is given (e.g. the averaged weights), not the model's."""
    config_path, checkpoint = write_tiny_open_clip(tmp_path / "tiny", name="tinyexport")
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    state = {k: torch.full_like(v, 0.5) for k, v in model.image_encoder.state_dict().items()}
    folder = model.export(state, tmp_path / "exported")
    written = load_file(str(folder / "open_clip_model.safetensors"))
    assert torch.equal(written["visual.conv1.weight"], state["conv1.weight"])
    assert not torch.equal(model.image_encoder.state_dict()["conv1.weight"], state["conv1.weight"])


def test_export_rejects_foreign_state(tmp_path):
    config_path, checkpoint = write_tiny_open_clip(tmp_path / "tiny", name="tinyexport")
    model = load_model(f"open_clip:{config_path}:{checkpoint}")
    with pytest.raises(ValueError, match="missing keys"):
        model.export({"weight": torch.zeros(2)}, tmp_path / "exported")


HF_RELOAD = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor
folder, reference, padding = sys.argv[1:4]
ref = load_file(reference)
model = AutoModel.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
length = model.config.text_config.max_position_embeddings
tokens = processor.tokenizer(["a photo of a cat."], padding=padding, max_length=length,
                             truncation=True, return_tensors="pt")
with torch.no_grad():
    image = model.get_image_features(pixel_values=ref["images"]).pooler_output
    text = model.get_text_features(**tokens).pooler_output
bias = getattr(model, "logit_bias", None)
out = {
    "image": (image - ref["image"]).abs().max().item(),
    "text": (text - ref["text"]).abs().max().item(),
    "logit_scale": model.logit_scale.exp().item(),
    "logit_bias": None if bias is None else bias.item(),
    "clipood_imported": "clipood" in sys.modules,
}
print(json.dumps(out))
"""


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_hf_export_reloads_natively(which, tmp_path):
    writer = write_tiny_hf_clip if which == "clip" else write_tiny_hf_siglip
    source = writer(tmp_path / which)
    model = load_model(f"hf:{source}")
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    finetune(model)
    state = model.image_encoder.state_dict()
    assert any(not torch.equal(before[k], state[k]) for k in state)
    reference = write_reference(model, tmp_path)
    folder = model.export(state, tmp_path / "exported")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (folder / name).is_file(), name
    padding = "max_length" if which == "siglip" else "longest"
    out = run_native(HF_RELOAD, str(folder), str(reference), padding)
    assert out["clipood_imported"] is False
    assert out["image"] <= ATOL
    assert out["text"] <= ATOL
    assert out["logit_scale"] == pytest.approx(model.logit_scale, rel=1e-6)
    if which == "siglip":
        assert out["logit_bias"] == pytest.approx(model.logit_bias)
    else:
        assert out["logit_bias"] is None


def test_hf_export_reloads_through_clipood(tmp_path):
    source = write_tiny_hf_clip(tmp_path / "clip")
    model = load_model(f"hf:{source}")
    finetune(model, steps=1)
    folder = model.export(model.image_encoder.state_dict(), tmp_path / "exported")
    reloaded = load_model(f"hf:{folder}").eval()
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_image(images), model.encode_image(images), atol=ATOL, rtol=0
        )


def test_cli_export_run_folder(tmp_path):
    config_path, checkpoint = write_tiny_open_clip(tmp_path / "tiny", name="tinyexport")
    model = load_model(f"open_clip:{config_path}:{checkpoint}").eval()
    states = write_run_folder(tmp_path / "run", model, CLASSES)
    output = tmp_path / "exported"
    result = run_cli(
        "export", "--run", str(tmp_path / "run"), "--weights", "averaged", "--output", str(output)
    )
    assert result.returncode == 0, result.stderr
    assert str(output) in result.stdout
    model.image_encoder.load_state_dict(states["averaged"])
    reference = write_reference(model, tmp_path)
    out = run_native(OPEN_CLIP_RELOAD, str(output), str(reference), str(config_path))
    assert out["image_folder"] <= ATOL
    assert out["text"] <= ATOL


def test_cli_export_missing_run(tmp_path):
    result = run_cli("export", "--run", str(tmp_path / "absent"), "--output", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "not found" in result.stderr
