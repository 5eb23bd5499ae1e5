"""Readers for the two 28x28 grey sources: animal-mnist (gzip pickles) and Fashion-MNIST (IDX).

Both return ``(images, labels)`` with images as a ``uint8`` array of shape ``(n, 28, 28)``,
light object on dark background, and labels as an ``int64`` array.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

# Label order of animal-mnist 0.4 (alphabetical). Checked by viewing samples of each label.
ANIMAL_CLASSES = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
# Fashion-MNIST label order; "T-shirt/top" is written "t-shirt" because "/" cannot be
# part of a folder name.
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip

_ANIMAL_DATA = "animal_data_version_3.gz"
_ANIMAL_LABELS = "animal_label_version_3.gz"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"rejected {module}.{name} in a data file: only numpy arrays are allowed"
            )
        return super().find_class(module, name)


def _load_array(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        array = _NumpyOnlyUnpickler(handle).load()
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{path} does not contain a numpy array; is it animal-mnist 0.4?")
    return array


def read_animal_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the animal silhouettes from the package's ``data/Animal_MNIST`` folder."""
    images = _load_array(folder / _ANIMAL_DATA).astype(np.uint8)
    labels = _load_array(folder / _ANIMAL_LABELS).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(
            f"unexpected animal-mnist arrays in {folder}: images {images.shape}, "
            f"labels {labels.shape}"
        )
    return images, labels


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    # IDX header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    # then one big-endian uint32 per dimension.
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion_mnist(folder: Path, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Read the ``train`` or ``t10k`` (test) part of Fashion-MNIST from its IDX files."""
    if split not in ("train", "t10k"):
        raise ValueError(f"Fashion-MNIST split must be 'train' or 't10k', got {split!r}")
    images = _read_idx(folder / f"{split}-images-idx3-ubyte.gz")
    labels = _read_idx(folder / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def pick_per_class(labels: np.ndarray, count: int, seed: int, skip: int = 0) -> dict[int, list]:
    """Pick ``count`` indices per label at random, after skipping the first ``skip`` picks.

    Two calls with the same seed and disjoint ``[skip, skip + count)`` ranges return
    disjoint indices, which keeps a real domain and a domain derived from the same source
    free of shared images.
    """
    rng = np.random.default_rng(seed)
    picks = {}
    for label in np.unique(labels):
        order = rng.permutation(np.flatnonzero(labels == label))
        picks[int(label)] = sorted(order[skip : skip + count].tolist())
    return picks
