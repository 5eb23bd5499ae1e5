"""The run folder layout and atomic file writes.

A run folder contains everything one training run produces::

    RUN/config.yaml                   resolved configuration
    RUN/model.json                    model spec, class names and prompt templates
    RUN/metrics.jsonl                 one JSON record per log or evaluation
    RUN/summary.json                  final numbers, written last
    RUN/weights/final.safetensors     image encoder after the last step
    RUN/weights/averaged.safetensors  image encoder of the weight average
    RUN/checkpoint/last.pt            resumable training state
    RUN/tensorboard/                  TensorBoard event files

Every file is written to a temporary name in its own folder and then moved into place
with ``os.replace``, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from clipood.fileio import write_atomic

WEIGHT_NAMES = ("final", "averaged")


@dataclass(frozen=True)
class RunFolder:
    """Paths of the files in one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def model(self) -> Path:
        return self.root / "model.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint" / "last.pt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def weights(self, name: str) -> Path:
        if name not in WEIGHT_NAMES:
            raise ValueError(f"unknown weights {name!r}; expected one of {', '.join(WEIGHT_NAMES)}")
        return self.root / "weights" / f"{name}.safetensors"


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_yaml_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: Path) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))
