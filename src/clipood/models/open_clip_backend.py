"""OpenCLIP models behind the ``ImageTextModel`` interface.

Model strings are ``open_clip:NAME[:PRETRAINED]``. ``NAME`` is an architecture from
``open_clip.list_models()`` or the path of a model config JSON file (``embed_dim``,
``vision_cfg``, ``text_cfg``), which is registered under its file stem. ``PRETRAINED`` is a
pretrained tag (``openai``, ``laion2b_s34b_b88k``), a checkpoint file, or a folder written by
``export`` (``open_clip_config.json`` plus weights); without it the weights are random.

Pretrained tags are looked up in the local caches first, and cached weights are loaded
from their local file. Missing weights are downloaded by open_clip, unless the Hugging Face
hub is in offline mode (``HF_HUB_OFFLINE=1``): then loading raises ``WeightsNotFoundError``
at once.

NOTE: OpenCLIP models with a Hugging Face tokenizer (the SigLIP ones) load it through
open_clip, which may query the hub for updates unless ``HF_HUB_OFFLINE=1`` is set.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from torch import nn

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

CONFIG_FILENAME = "open_clip_config.json"
WEIGHTS_FILENAME = "open_clip_model.safetensors"
# open_clip stores weights fetched by URL here unless a cache_dir is given.
URL_CACHE_DIR = Path("~/.cache/clip").expanduser()
# The file open_clip fetches from a hub repo whose pretrained entry names no file.
DEFAULT_HUB_FILENAME = "open_clip_pytorch_model.bin"


class OpenClipTextTower(nn.Module):
    """An OpenCLIP model with its image tower replaced by ``nn.Identity``.

    It keeps everything ``encode_text`` uses (token embedding, transformer, final norm,
    text projection, or ``text`` for custom text towers) and the logit scale and bias,
    so that its state dict plus the image tower's is the full checkpoint.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        clip_model.visual = nn.Identity()
        self.model = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class OpenClipModel(ImageTextModel):
    """An OpenCLIP model: ``image_encoder`` is its ``visual`` tower, whose output is
    the joint embedding."""

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer,
        *,
        train_transform,
        eval_transform,
        spec: ModelSpec,
        model_config: dict,
    ):
        visual = clip_model.visual
        preprocess_cfg = dict(getattr(visual, "preprocess_cfg", {}))
        logit_bias = getattr(clip_model, "logit_bias", None)
        super().__init__(
            visual,
            OpenClipTextTower(clip_model),
            logit_scale=clip_model.logit_scale.exp().item(),
            logit_bias=None if logit_bias is None else logit_bias.item(),
            train_transform=train_transform,
            eval_transform=eval_transform,
            spec=spec,
        )
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.preprocess_cfg = preprocess_cfg

    def encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)
        return self.text_encoder(tokens)

    def export(self, image_state: dict[str, torch.Tensor], destination: Path) -> Path:
        """Write an OpenCLIP model folder: ``open_clip_model.safetensors`` (the full
        state dict with ``image_state`` as the ``visual`` tower), ``open_clip_config.json``
        and, for Hugging Face tokenizers, the tokenizer files.

        Reload it with ``open_clip.create_model("local-dir:" + folder)``, or with
        ``open_clip.create_model(NAME, pretrained=folder + "/open_clip_model.safetensors")``.
        """
        check_state_keys(image_state, self.image_encoder.state_dict(), "image_state")
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        state = dict(self.text_encoder.model.state_dict())
        state.update({f"visual.{key}": tensor for key, tensor in image_state.items()})
        tensors = {
            key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in state.items()
        }
        write_atomic_safetensors(tensors, destination / WEIGHTS_FILENAME)
        config = {"model_cfg": self.model_config, "preprocess_cfg": self._export_preprocess()}
        config_path = destination / CONFIG_FILENAME
        temp_path = config_path.with_suffix(".json.tmp")
        temp_path.write_text(json.dumps(config, indent=2))
        os.replace(temp_path, config_path)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(str(destination))
        return destination

    def _export_preprocess(self) -> dict:
        keys = ("mean", "std", "interpolation", "resize_mode")
        return {key: self.preprocess_cfg[key] for key in keys if key in self.preprocess_cfg}


def write_atomic_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    temp_path = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temp_path))
    os.replace(temp_path, path)


# --- resolving names and weights -----------------------------------------------------


def register_model_name(name: str) -> str:
    """Return the OpenCLIP architecture name for ``name``, registering a config JSON
    file under its stem when ``name`` is such a path."""
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"OpenCLIP model config {path} not found")
        config = json.loads(path.read_text())
        if not all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
            raise ValueError(
                f"{path} is not an OpenCLIP model config: it needs the keys "
                "'embed_dim', 'vision_cfg' and 'text_cfg'"
            )
        open_clip.add_model_config(path)
        return path.stem
    available = open_clip.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown OpenCLIP model {name!r}.{hint} Run python -c 'import open_clip; "
            "print(open_clip.list_models())' for all names, or pass a model config JSON path."
        )
    return name


def cached_tag_file(tag_cfg: dict, cache_dir: str | None) -> str | None:
    """Return the local file of a pretrained tag's weights, or None if not cached.

    Looks where open_clip would download to, without touching the network: the hub cache
    for hub-hosted weights (the safetensors file first), else the URL cache folder.
    """
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        for candidate in hub_filenames(filename or DEFAULT_HUB_FILENAME):
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        path = Path(cache_dir or URL_CACHE_DIR) / os.path.basename(tag_cfg["url"])
        if path.is_file():
            return str(path)
    return None


def hub_filenames(filename: str) -> list[str]:
    """Return the names open_clip tries for a hub weights file: safetensors first."""
    stem, suffix = os.path.splitext(filename)
    if filename == DEFAULT_HUB_FILENAME:
        return ["open_clip_model.safetensors", filename]
    if suffix in (".bin", ".pth"):
        return [stem + ".safetensors", filename]
    return [filename]


def searched_folders(tag_cfg: dict, cache_dir: str | None) -> list[str]:
    folders = []
    if tag_cfg.get("hf_hub"):
        folders.append(
            f"{cache_dir or hub_cache_dir()} (hub repo {os.path.dirname(tag_cfg['hf_hub'])})"
        )
    if tag_cfg.get("url"):
        folders.append(str(cache_dir or URL_CACHE_DIR))
    return folders


def local_file_example(name: str, tag_cfg: dict) -> str:
    """Return a model string that loads the tag's weights from a local file. A file does
    not record QuickGELU, so tags trained with it point to the ``-quickgelu`` variant."""
    if tag_cfg.get("quick_gelu") and f"{name}-quickgelu" in open_clip.list_models():
        name = f"{name}-quickgelu"
    return f"open_clip:{name}:/path/to/open_clip_pytorch_model.bin"


def resolve_weights(
    name: str, pretrained: str | None, cache_dir: str | None
) -> tuple[str, str | None, dict]:
    """Return ``(model_name, pretrained_argument, tag_cfg)`` for open_clip.

    ``pretrained_argument`` is a local file whenever one exists, so open_clip never
    downloads what is cached; ``tag_cfg`` is the tag's preprocessing and flags, or ``{}``.
    """
    if pretrained is None:
        logger.warning("OpenCLIP model %s has no pretrained weights: random initialisation", name)
        return name, None, {}
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        local = cached_tag_file(tag_cfg, cache_dir)
        if local is not None:
            return name, local, tag_cfg
        if hub_offline():
            raise WeightsNotFoundError(
                missing_weights_message(
                    f"open_clip:{name}:{pretrained}",
                    searched_folders(tag_cfg, cache_dir),
                    local_file_example(name, tag_cfg),
                )
            )
        return name, pretrained, tag_cfg
    path = Path(pretrained).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILENAME).is_file():
            raise FileNotFoundError(
                f"folder {path} has no {CONFIG_FILENAME}; pass the checkpoint file itself"
            )
        return f"local-dir:{path}", None, {}
    if path.is_file():
        return name, str(path), {}
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise FileNotFoundError(
        f"pretrained {pretrained!r} for OpenCLIP model {name!r} is neither a known tag "
        f"({', '.join(tags) or 'none for this model'}) nor an existing file or folder"
    )


# --- loading -------------------------------------------------------------------------


def load(spec: ModelSpec, cache_dir: str | None = None, **options) -> OpenClipModel:
    """Build an OpenCLIP model in float32 on the CPU.

    Args:
        spec: ``name`` is an architecture or config JSON path; ``pretrained`` a tag, file
            or exported folder.
        cache_dir: where open_clip caches downloads (default: the hub cache and
            ``~/.cache/clip``).
        options: ``force_quick_gelu`` and other keyword arguments of
            ``open_clip.create_model_and_transforms``. Tags trained with QuickGELU
            (``openai``) turn it on themselves.
    """
    options = {**spec.options, **options}
    name = register_model_name(spec.name)
    model_name, pretrained, tag_cfg = resolve_weights(name, spec.pretrained, cache_dir)
    if tag_cfg.get("quick_gelu"):
        options.setdefault("force_quick_gelu", True)
    downloading = bool(tag_cfg) and pretrained == spec.pretrained
    if tag_cfg and not downloading:
        options.update(tag_preprocess_options(tag_cfg))
    clip_model, train_transform, eval_transform = create_open_clip(
        model_name, pretrained, spec, cache_dir, options, tag_cfg if downloading else None
    )
    tokenizer = create_tokenizer(model_name, spec, cache_dir)
    clip_model.float().eval()
    return OpenClipModel(
        clip_model,
        tokenizer,
        train_transform=train_transform,
        eval_transform=eval_transform,
        spec=spec,
        model_config=final_model_config(model_name, options),
    )


def tag_preprocess_options(tag_cfg: dict) -> dict:
    """Preprocessing of a pretrained tag, as ``create_model_and_transforms`` arguments
    (open_clip applies them itself only when it is given the tag, not a file)."""
    keys = {
        "mean": "image_mean",
        "std": "image_std",
        "interpolation": "image_interpolation",
        "resize_mode": "image_resize_mode",
    }
    return {argument: tag_cfg[key] for key, argument in keys.items() if key in tag_cfg}


def create_open_clip(
    model_name: str,
    pretrained: str | None,
    spec: ModelSpec,
    cache_dir: str | None,
    options: dict,
    download_cfg: dict | None,
):
    """Call ``open_clip.create_model_and_transforms``; ``download_cfg`` is the tag's
    config when open_clip is about to download its weights."""
    try:
        return open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, cache_dir=cache_dir, **options
        )
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if download_cfg:
            raise WeightsNotFoundError(
                missing_weights_message(
                    str(spec),
                    searched_folders(download_cfg, cache_dir),
                    local_file_example(model_name, download_cfg),
                    reason=first_line(err),
                )
            ) from err
        raise ValueError(
            f"cannot build OpenCLIP model {spec}: {first_line(err)}; check that the "
            f"checkpoint {pretrained} was saved from architecture {spec.name}"
        ) from err


def create_tokenizer(model_name: str, spec: ModelSpec, cache_dir: str | None):
    try:
        return open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        raise WeightsNotFoundError(
            missing_weights_message(
                f"the tokenizer of {spec}",
                [cache_dir or hub_cache_dir()],
                f"open_clip:{spec.name}:/path/to/exported_folder",
                reason=first_line(err),
            )
        ) from err


def final_model_config(model_name: str, options: dict) -> dict:
    """Return the architecture config that rebuilds this model, QuickGELU included."""
    config = open_clip.get_model_config(model_name) or {}
    if options.get("force_quick_gelu"):
        config["quick_gelu"] = True
    if options.get("force_custom_text"):
        config["custom_text"] = True
    return config
