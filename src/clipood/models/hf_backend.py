"""Hugging Face ``transformers`` CLIP and SigLIP models behind the ``ImageTextModel``
interface.

Model strings are ``hf:ID_OR_FOLDER``: a local folder written by ``save_pretrained`` or a
hub id. A hub id is read from the local hub cache first and downloaded only when it is
missing and the hub is not in offline mode (``HF_HUB_OFFLINE=1``).

Image preprocessing follows the checkpoint's image processor config (size, crop, mean,
std, resampling) as torchvision transforms. Training adds a random resized crop with area
scale 0.9 to 1 (OpenCLIP's default) and a horizontal flip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms as T

from clipood.models.base import ImageTextModel, ModelSpec
from clipood.models.errors import (
    WeightsNotFoundError,
    check_state_keys,
    first_line,
    hub_cache_dir,
    hub_offline,
    missing_weights_message,
)

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("clip", "siglip")
TRAIN_CROP_SCALE = (0.9, 1.0)
# PIL resampling codes, as image processor configs store them.
PIL_RESAMPLE = {
    0: T.InterpolationMode.NEAREST,
    1: T.InterpolationMode.LANCZOS,
    2: T.InterpolationMode.BILINEAR,
    3: T.InterpolationMode.BICUBIC,
    4: T.InterpolationMode.BOX,
    5: T.InterpolationMode.HAMMING,
}


class HFImageTower(nn.Module):
    """Vision transformer plus projection (CLIP) or the SigLIP vision model, whose pooled
    output is already the embedding. Attribute names match the full model's, so export
    loads each child into the submodule of the same name."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module | None):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        if self.visual_projection is not None:
            pooled = self.visual_projection(pooled)
        return pooled


class HFTextTower(nn.Module):
    """Text transformer plus projection (CLIP) or the SigLIP text model (with its head)."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module | None):
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(**inputs).pooler_output
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return pooled


class HFModel(ImageTextModel):
    """A ``transformers`` CLIPModel or SiglipModel split into a trainable image tower and
    a frozen text tower."""

    def __init__(self, hf_model: nn.Module, processor, spec: ModelSpec):
        config = hf_model.config
        self.model_type = config.model_type
        is_clip = self.model_type == "clip"
        image_tower = HFImageTower(
            hf_model.vision_model, hf_model.visual_projection if is_clip else None
        )
        text_tower = HFTextTower(hf_model.text_model, hf_model.text_projection if is_clip else None)
        logit_bias = getattr(hf_model, "logit_bias", None)
        train_transform, eval_transform = image_transforms(processor.image_processor.to_dict())
        super().__init__(
            image_tower,
            text_tower,
            logit_scale=hf_model.logit_scale.exp().item(),
            logit_bias=None if logit_bias is None else logit_bias.item(),
            train_transform=train_transform,
            eval_transform=eval_transform,
            spec=spec,
        )
        self.hf_config = config
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._hf_class = type(hf_model)
        # Kept as tensors so export writes the checkpoint's exact values.
        self._logit_params = {
            "logit_scale": hf_model.logit_scale.detach().clone(),
            **({"logit_bias": logit_bias.detach().clone()} if logit_bias is not None else {}),
        }

    def encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        max_length = self.hf_config.text_config.max_position_embeddings
        # SigLIP was trained on text padded to the full length, so it must be padded
        # the same way; CLIP pools at the end-of-text token and pads to the batch.
        padding = "max_length" if self.model_type == "siglip" else True
        inputs = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        device = next(self.text_encoder.parameters()).device
        accepted = ("input_ids", "attention_mask", "position_ids")
        inputs = {key: value.to(device) for key, value in inputs.items() if key in accepted}
        return self.text_encoder(**inputs)

    def export(self, image_state: dict[str, torch.Tensor], destination: Path) -> Path:
        """Write a ``save_pretrained`` folder (config, safetensors weights, tokenizer and
        processor files) that ``transformers.AutoModel.from_pretrained`` loads."""
        check_state_keys(image_state, self.image_encoder.state_dict(), "image_state")
        full_model = self._hf_class(self.hf_config)
        load_children(full_model, self.text_encoder.state_dict(), "text tower")
        load_children(full_model, image_state, "image tower")
        with torch.no_grad():
            for name, value in self._logit_params.items():
                getattr(full_model, name).copy_(value)
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        full_model.save_pretrained(str(destination))
        self.processor.save_pretrained(str(destination))
        return destination


def load_children(full_model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` (keys ``child.rest``) into the children of ``full_model`` by name."""
    by_child: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        child, _, rest = key.partition(".")
        by_child.setdefault(child, {})[rest] = tensor.detach().to("cpu")
    for child, child_state in by_child.items():
        module = getattr(full_model, child, None)
        if module is None:
            raise ValueError(f"the {what} has weights for {child!r}, which the model lacks")
        module.load_state_dict(child_state, strict=True)


# --- preprocessing -------------------------------------------------------------------


def image_transforms(processor_config: dict) -> tuple[T.Compose, T.Compose]:
    """Build (train, eval) torchvision transforms from an image processor config dict."""
    interpolation = interpolation_mode(processor_config)
    size = processor_config.get("size") or {}
    crop = processor_config.get("crop_size") or {}
    do_crop = bool(processor_config.get("do_center_crop")) and bool(crop)
    if "shortest_edge" in size:
        resize = T.Resize(size["shortest_edge"], interpolation=interpolation)
    elif "height" in size and "width" in size:
        resize = T.Resize((size["height"], size["width"]), interpolation=interpolation)
    else:
        raise ValueError(
            f"unsupported image processor size {size!r}: expected shortest_edge or height and width"
        )
    if do_crop:
        final_size = (crop["height"], crop["width"])
    elif "shortest_edge" in size:
        final_size = (size["shortest_edge"], size["shortest_edge"])
    else:
        final_size = (size["height"], size["width"])
    tail = [T.ToTensor()] + normalization(processor_config)
    eval_steps = [resize] + ([T.CenterCrop(final_size)] if do_crop else []) + tail
    train_steps = [
        T.RandomResizedCrop(final_size, scale=TRAIN_CROP_SCALE, interpolation=interpolation),
        T.RandomHorizontalFlip(),
    ] + tail
    return T.Compose(train_steps), T.Compose(eval_steps)


def interpolation_mode(processor_config: dict) -> T.InterpolationMode:
    resample = processor_config.get("resample", processor_config.get("interpolation", 3))
    if isinstance(resample, str):
        return T.InterpolationMode(resample.lower())
    return PIL_RESAMPLE[int(resample)]


class ScaleValues:
    """Multiply a tensor by a constant; a class rather than a lambda so that data loader
    worker processes can pickle it."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.factor


def normalization(processor_config: dict) -> list:
    """Rescaling and normalisation steps after ``ToTensor`` (which already divides by 255)."""
    steps: list = []
    rescale = processor_config.get("rescale_factor", 1 / 255)
    if not processor_config.get("do_rescale", True):
        steps.append(ScaleValues(255.0))
    elif abs(rescale - 1 / 255) > 1e-12:
        steps.append(ScaleValues(rescale * 255.0))
    if processor_config.get("do_normalize", True):
        steps.append(T.Normalize(processor_config["image_mean"], processor_config["image_std"]))
    return steps


# --- loading -------------------------------------------------------------------------


def load(spec: ModelSpec, cache_dir: str | None = None, **options) -> HFModel:
    """Load a CLIP or SigLIP checkpoint in float32 on the CPU.

    Args:
        spec: ``name`` is a local folder or a hub id.
        cache_dir: hub cache folder (default ``HF_HUB_CACHE``, i.e. ``HF_HOME/hub``).
        options: extra keyword arguments of ``from_pretrained`` (``revision``, ...).
    """
    from transformers import AutoConfig, AutoModel, AutoProcessor

    options = {**spec.options, **options}
    folder = Path(spec.name).expanduser()
    is_folder = folder.is_dir()
    if not is_folder and looks_like_path(spec.name):
        raise FileNotFoundError(
            f"model folder {folder} not found; pass an existing save_pretrained folder "
            "or a hub id such as openai/clip-vit-base-patch16"
        )
    source = str(folder) if is_folder else spec.name

    def read(loader):
        return call_from_pretrained(loader, source, spec, is_folder, cache_dir, options)

    config = read(AutoConfig)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model {spec.name!r} is a {config.model_type!r} model; the hf backend supports "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (CLIPModel and SiglipModel checkpoints)"
        )
    hf_model = read(AutoModel).float().eval()
    processor = read(AutoProcessor)
    return HFModel(hf_model, processor, spec)


def looks_like_path(name: str) -> bool:
    """Return True for names that can only be paths, because hub ids are ``org/name``."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def call_from_pretrained(
    loader, source: str, spec: ModelSpec, is_folder: bool, cache_dir: str | None, options: dict
):
    """Call ``loader.from_pretrained`` from local files only, then, for a hub id that is
    not cached and while the hub is online, with downloads allowed."""
    kwargs = {"cache_dir": cache_dir, **options}
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        if is_folder:
            raise FileNotFoundError(
                f"cannot load {loader.__name__} from folder {source}: {first_line(err)}; the "
                "folder must hold the files save_pretrained writes (config.json, weights, "
                "tokenizer and preprocessor files)"
            ) from err
        cached_error = err
    if not hub_offline():
        try:
            return loader.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            cached_error = err
    raise WeightsNotFoundError(
        missing_weights_message(
            f"hf:{spec.name}",
            [cache_dir or hub_cache_dir()],
            "hf:/path/to/folder",
            reason=first_line(cached_error),
        )
    ) from cached_error
