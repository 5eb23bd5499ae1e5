"""Weights as safetensors, resumable training state, and loading a trained run.

Weights are plain ``state_dict`` tensors in safetensors files. The resumable state in
``checkpoint/last.pt`` holds only tensors, numbers, strings, lists and dicts (random
number generator states are stored as tensors), so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clipood.engine.run_folder import RunFolder, read_json, write_atomic, write_json_atomic
from clipood.models.base import ImageTextModel, ModelSpec


def save_state_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as a safetensors file, atomically.

    Tensors are made contiguous CPU copies because safetensors rejects shared or
    strided storage.
    """
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in state.items()}
    write_atomic(path, lambda temporary: save_file(tensors, str(temporary)))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    return load_file(str(path))


# --- model description --------------------------------------------------------------


def save_model_description(
    run: RunFolder, spec: ModelSpec, classnames: list[str], templates: list[str]
) -> None:
    """Write ``model.json``: what ``load_run_model`` needs to rebuild the model."""
    data = {"spec": spec.to_dict(), "classnames": list(classnames), "templates": list(templates)}
    write_json_atomic(run.model, data)


def read_model_description(run_dir: Path) -> dict:
    run = RunFolder(Path(run_dir))
    if not run.root.is_dir():
        raise FileNotFoundError(f"run folder {run.root} not found")
    if not run.model.is_file():
        raise FileNotFoundError(
            f"{run.model} not found; {run.root} is not a finished training run folder"
        )
    return read_json(run.model)


def resolve_weights(run_dir: Path, weights: str = "auto") -> str:
    """Return which weights to load.

    ``auto`` takes the weights a finished run reports (``reported_weights`` in its
    ``summary.json``), so a missing file is an error rather than a silent switch to
    other weights. For a run without a summary it takes ``averaged`` when that file
    exists (methods that average or interpolate write it), else ``final``.
    """
    run = RunFolder(Path(run_dir))
    if weights != "auto":
        return weights
    if run.summary.is_file():
        reported = read_json(run.summary).get("reported_weights")
        if reported in ("averaged", "final"):
            return reported
    if run.weights("averaged").is_file():
        return "averaged"
    return "final"


def load_run_weights(model: ImageTextModel, run_dir: Path, weights: str = "auto") -> ImageTextModel:
    """Load ``weights/<weights>.safetensors`` of a run into ``model.image_encoder``."""
    run = RunFolder(Path(run_dir))
    weights = resolve_weights(run_dir, weights)
    path = run.weights(weights)
    if not path.is_file():
        present = sorted(p.stem for p in path.parent.glob("*.safetensors"))
        hint = (
            f"this run has {', '.join(present)} weights: pass --weights {present[0]}"
            if present
            else "the run has no weights yet: train it first or check the folder"
        )
        raise FileNotFoundError(f"{path} not found; {hint}")
    state = load_state(path)
    model.image_encoder.load_state_dict(state)
    return model


def load_run_model(run_dir: Path, weights: str = "auto", device: str = "cpu") -> ImageTextModel:
    """Rebuild a run's pretrained model from ``model.json`` and load its trained weights."""
    from clipood.models.loading import load_model

    description = read_model_description(run_dir)
    model = load_model(ModelSpec.from_dict(description["spec"]), device="cpu")
    load_run_weights(model, run_dir, weights)
    return model.to(device)


# --- random number generator states -------------------------------------------------


def capture_rng_state() -> dict:
    """Return the torch, CUDA, Python and NumPy generator states as tensors."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python_internal": torch.tensor(internal, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_position": int(position),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": float(cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    internal = tuple(int(value) for value in state["python_internal"].tolist())
    random.setstate((state["python_version"], internal, state["python_gauss"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state["numpy_position"], state["numpy_has_gauss"], state["numpy_cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- resumable training state -------------------------------------------------------


def save_training_state(state: dict, path: Path) -> None:
    write_atomic(path, lambda temporary: torch.save(state, temporary))


def load_training_state(path: Path, mmap: bool = False) -> dict:
    """Load ``checkpoint/last.pt`` with ``weights_only=True`` (no arbitrary pickles).

    Raises ValueError naming the file if it is empty, truncated or not a torch checkpoint,
    for example after a crash or a full disk.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"cannot read the checkpoint {path} ({type(err).__name__}: {err}); the file is "
            "damaged. Delete it to start this run over, or start over with --no-resume"
        ) from err
