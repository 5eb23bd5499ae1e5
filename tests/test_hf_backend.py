"""The Hugging Face backend on tiny random-weight CLIP and SigLIP checkpoints.

The checkpoints are written with ``save_pretrained`` together with tokenizers built in
process (no download): a character-level ``CLIPTokenizer`` and a ``tokenizers``
WordPiece tokenizer for SigLIP. ``write_tiny_hf_clip`` and ``write_tiny_hf_siglip`` are
also used by the export and predict tests.
"""

from __future__ import annotations

import json
import math
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

from clipood.models import load_model

IMAGE_SIZE = 32
CLIP_LOGIT_SCALE = 20.0
SIGLIP_LOGIT_SCALE = 10.0
SIGLIP_LOGIT_BIAS = -5.0
SIGLIP_TEXT_LENGTH = 16
TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE tokenizer whose vocabulary is single characters (no merges)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + ".,-'":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_siglip_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"])
    sentences = ["a photo of a cat.", "a sketch of a dog.", "a drawing of the horse and bird"]
    tokenizer.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=SIGLIP_TEXT_LENGTH,
    )


def write_tiny_hf_clip(folder: Path, seed: int = 0) -> Path:
    tokenizer = tiny_clip_tokenizer()
    text = dict(TOWER, vocab_size=len(tokenizer), max_position_embeddings=32)
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(TOWER, image_size=IMAGE_SIZE, patch_size=16)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(CLIP_LOGIT_SCALE))
    # Resize to 36 then centre-crop 32, as CLIP's processors do at 224 px.
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE + 4},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def write_tiny_hf_siglip(folder: Path, seed: int = 0) -> Path:
    tokenizer = tiny_siglip_tokenizer()
    text = dict(TOWER, vocab_size=len(tokenizer), max_position_embeddings=SIGLIP_TEXT_LENGTH)
    text.update(projection_size=32, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    vision = dict(TOWER, image_size=IMAGE_SIZE, patch_size=16)
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(SIGLIP_LOGIT_SCALE))
        model.logit_bias.fill_(SIGLIP_LOGIT_BIAS)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model.save_pretrained(folder)
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def gradient_image(width: int = 50, height: int = 40) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    pixels = np.stack([x, y, np.full_like(x, 128.0)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "clip")


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory) -> Path:
    return write_tiny_hf_siglip(tmp_path_factory.mktemp("hf") / "siglip")


def test_clip_matches_native(clip_folder):
    model = load_model(f"hf:{clip_folder}").eval()
    native = AutoModel.from_pretrained(clip_folder).eval()
    tokenizer = AutoProcessor.from_pretrained(clip_folder).tokenizer
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    texts = ["a photo of a cat.", "a dog"]
    with torch.no_grad():
        expected_image = native.get_image_features(pixel_values=images).pooler_output
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        expected_text = native.get_text_features(**tokens).pooler_output
        torch.testing.assert_close(model.encode_image(images, normalize=False), expected_image)
    torch.testing.assert_close(model.encode_text(texts, normalize=False), expected_text)
    assert model.logit_scale == pytest.approx(CLIP_LOGIT_SCALE, rel=1e-6)
    assert model.logit_bias is None


def test_siglip_matches_native_padded(siglip_folder):
    model = load_model(f"hf:{siglip_folder}").eval()
    native = AutoModel.from_pretrained(siglip_folder).eval()
    tokenizer = AutoProcessor.from_pretrained(siglip_folder).tokenizer
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        expected_image = native.get_image_features(pixel_values=images).pooler_output
        tokens = tokenizer(["a cat"], padding="max_length", max_length=16, return_tensors="pt")
        expected_text = native.get_text_features(**tokens).pooler_output
        torch.testing.assert_close(model.encode_image(images, normalize=False), expected_image)
    torch.testing.assert_close(model.encode_text(["a cat"], normalize=False), expected_text)
    assert model.logit_scale == pytest.approx(SIGLIP_LOGIT_SCALE, rel=1e-6)
    assert model.logit_bias == pytest.approx(SIGLIP_LOGIT_BIAS)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_eval_transform_matches_processor(which, clip_folder, siglip_folder):
    folder = clip_folder if which == "clip" else siglip_folder
    model = load_model(f"hf:{folder}")
    processor = AutoProcessor.from_pretrained(folder)
    image = gradient_image()
    expected = processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(model.eval_transform(image), expected, atol=1e-5, rtol=0)
    assert model.train_transform(image).shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_only_image_tower_trains(clip_folder):
    model = load_model(f"hf:{clip_folder}")
    assert all(p.requires_grad for p in model.image_encoder.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder .* not found"):
        load_model(f"hf:{tmp_path / 'absent' / 'model'}")


def test_folder_without_processor(tmp_path, clip_folder):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((clip_folder / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="save_pretrained writes"):
        load_model(f"hf:{folder}")


def test_unsupported_model_type(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model; the hf backend supports clip, siglip"):
        load_model(f"hf:{folder}")


OFFLINE_SCRIPT = """
from clipood.models import load_model
from clipood.models.errors import WeightsNotFoundError
try:
    load_model("hf:openai/clip-vit-base-patch16")
except WeightsNotFoundError as err:
    print(err)
else:
    raise SystemExit("loaded without weights")
"""


def test_missing_hub_weights_offline_error(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["TRANSFORMERS_OFFLINE"] = "1"
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
    assert "hf:openai/clip-vit-base-patch16" in message
    assert str(tmp_path / "hf" / "hub") in message
    assert "--model hf:/path/to/folder" in message
    assert "Traceback" not in result.stderr
