"""The error raised when pretrained weights are not on this machine, and message helpers.

The OpenCLIP and Hugging Face backends look for weights in their local caches first.
When the weights are missing they download them, unless the hub is in offline mode, and
raise ``WeightsNotFoundError`` when that is not possible. Its message names the model, the
folders searched and how to pass a local copy instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# Environment variables with which huggingface_hub and transformers switch off downloads.
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are neither cached locally nor downloadable right now."""


def hub_offline() -> bool:
    """Return True when the Hugging Face hub is in offline mode, by environment variable
    or by ``huggingface_hub``'s own setting."""
    for name in OFFLINE_ENV_VARS:
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def missing_weights_message(
    model: str, searched: Sequence[Path | str], local_example: str, reason: str = ""
) -> str:
    """Build the message for weights that are not available: what, where, and the fix."""
    folders = ", ".join(str(path) for path in searched)
    mode = "offline mode is on" if hub_offline() else "the download failed"
    lines = [
        f"pretrained weights for {model!r} are not available locally and {mode}.",
        f"Searched: {folders}.",
    ]
    if reason:
        lines.append(f"Cause: {reason}")
    lines.append(
        "Fix: download the weights on a machine with network access and pass the local "
        f"copy, for example --model {local_example}, or point HF_HOME at a cache that holds them."
    )
    return "\n".join(lines)


def check_state_keys(state: dict, expected: dict, name: str) -> None:
    """Raise ValueError when ``state`` does not have exactly the keys of ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{name} does not match the image tower: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}; pass image_encoder.state_dict() of this model"
        )


def first_line(err: BaseException) -> str:
    """Return the first line of an exception's message (at most 500 characters)."""
    text = str(err).strip().splitlines()
    return text[0][:500] if text else type(err).__name__
