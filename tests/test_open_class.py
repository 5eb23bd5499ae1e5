"""Open-class protocol end to end on a CoOp-style OxfordPets tree with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipood.data.coop import load_coop
from clipood.experiments.open_class import load_open_class_data, run_open_class
from clipood.experiments.tables import harmonic_mean

BREEDS = ["abyssinian", "basset_hound", "beagle", "great_pyrenees"]
FAST = {"steps": 3, "batch_size": 4, "lr": 1e-3, "margin": 0.05, "eval_batch_size": 16}


def write_pets(root: Path, train: int = 6, test: int = 4) -> Path:
    """Write ``root/oxford_pets/images`` and ``split_zhou_OxfordPets.json``."""
    rng = np.random.default_rng(0)
    folder = root / "oxford_pets"
    (folder / "images").mkdir(parents=True)
    split = {"train": [], "val": [], "test": []}
    for label, breed in enumerate(BREEDS):
        for part, count in (("train", train), ("val", 1), ("test", test)):
            for i in range(count):
                name = f"{breed}_{part}{i}.jpg"
                pixels = np.full((32, 32, 3), 40.0)
                pixels[..., label % 3] = 200
                pixels += rng.normal(0, 15, pixels.shape)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / "images" / name
                )
                split[part].append([name, label, breed])
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return folder


def test_open_class_data_split(tmp_path):
    write_pets(tmp_path)
    name, split, templates = load_open_class_data("OxfordPets", data_root=tmp_path, shots=2)
    assert name == "OxfordPets"
    assert templates == ("a photo of a {}, a type of pet.",)
    assert split.base_classnames == ["abyssinian", "basset_hound"]
    assert split.new_classnames == ["beagle", "great_pyrenees"]
    assert len(split.train) == 4
    assert {s.label for s in split.train} == {0, 1}
    assert len(split.test_base) == 8
    assert len(split.test_new) == 8
    all_test = {s.path for s in load_coop(tmp_path, "OxfordPets").test}
    assert not {s.path for s in split.train} & all_test


def test_split_file_path_source(tmp_path):
    folder = write_pets(tmp_path)
    name, split, _ = load_open_class_data(folder / "split_zhou_OxfordPets.json", shots=3)
    assert name == "OxfordPets"
    assert len(split.train) == 6


def test_image_folder_source_split_per_class(tmp_path):
    for label, name in enumerate(["crème brûlée", "Tyrannosaurus_rex", "apple", "kiwi"]):
        for i in range(6):
            path = tmp_path / "data" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (label * 60, 0, 0)).save(path)
    name, split, _ = load_open_class_data(tmp_path / "data", shots=2, seed=0)
    assert name == "data"
    assert split.classnames == ["Tyrannosaurus_rex", "apple", "crème brûlée", "kiwi"]
    # Three of six images per class are held out for testing.
    assert len(split.test_base) == 6
    assert len(split.test_new) == 6
    assert not {s.path for s in split.train} & {s.path for s in split.test_base}


def test_unknown_source_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_open_class_data(tmp_path / "nothing-here")


def test_run_open_class_end_to_end(tmp_path, tiny_model):
    write_pets(tmp_path)
    run_dir = tmp_path / "run"
    summary = run_open_class(
        tiny_model, "OxfordPets", method="clipood", seed=0, shots=3, run_dir=run_dir,
        data_root=tmp_path, overrides=FAST,
    )  # fmt: skip
    assert summary["reported_weights"] == "averaged"
    assert set(summary["by_weights"]) == {"zeroshot", "final", "averaged"}
    for metrics in summary["by_weights"].values():
        assert metrics["base_images"] == 8
        assert metrics["new_images"] == 8
        assert metrics["H"] == pytest.approx(harmonic_mean(metrics["base"], metrics["new"]))
    assert summary["counts"] == {"train": 6, "test_base": 8, "test_new": 8}
    assert summary["steps"] == 3
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["metrics"] == summary["by_weights"]["averaged"]
    assert (run_dir / "weights" / "averaged.safetensors").is_file()
    model_json = json.loads((run_dir / "model.json").read_text())
    assert model_json["classnames"] == ["abyssinian", "basset_hound"]


def test_run_open_class_zeroshot(tmp_path, tiny_model):
    write_pets(tmp_path)
    summary = run_open_class(
        tiny_model, "OxfordPets", method="zeroshot", shots=2, run_dir=tmp_path / "zs",
        data_root=tmp_path, overrides=FAST,
    )  # fmt: skip
    assert summary["reported_weights"] == "zeroshot"
    assert list(summary["by_weights"]) == ["zeroshot"]
    assert summary["steps"] == 0
    assert not (tmp_path / "zs" / "weights").exists()
