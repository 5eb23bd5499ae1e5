"""CoOp-style open-class datasets: split files, validation, base-to-new sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipood.data.coop import (
    COOP_DATASETS,
    base_to_new,
    coop_dataset,
    load_coop,
    read_split_file,
)
from clipood.data.templates import DEFAULT_TEMPLATE, templates_for

BREEDS = ["abyssinian", "american_bulldog", "basset_hound", "beagle", "bengal"]


def write_image(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 40)).save(path)


def write_pets(root: Path, train: int = 20, val: int = 2, test: int = 3) -> Path:
    """Write ``root/oxford_pets`` with a split file and tiny JPEGs; return the folder."""
    folder = root / "oxford_pets"
    split = {"train": [], "val": [], "test": []}
    for label, breed in enumerate(BREEDS):
        for name, count in (("train", train), ("val", val), ("test", test)):
            for i in range(count):
                relative = f"{breed}_{name}_{i}.jpg"
                write_image(folder / "images" / relative, shade=10 * label + i)
                split[name].append([relative, label, breed])
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return folder


def test_registry_has_eleven_datasets():
    assert len(COOP_DATASETS) == 11
    assert coop_dataset("oxfordpets").split_file == "split_zhou_OxfordPets.json"
    assert coop_dataset("OxfordFlowers").name == "Flowers102"
    assert coop_dataset("DescribableTextures").folder == "dtd"
    with pytest.raises(ValueError, match="unknown open-class dataset"):
        coop_dataset("MNIST")


def test_load_pets_split(tmp_path):
    write_pets(tmp_path)
    splits = load_coop(tmp_path, "OxfordPets")
    assert splits.classnames == BREEDS
    assert len(splits.train) == 5 * 20
    assert len(splits.val) == 5 * 2
    assert len(splits.test) == 5 * 3
    assert splits.train[0].path == tmp_path / "oxford_pets/images/abyssinian_train_0.jpg"
    assert splits.templates == ("a photo of a {}, a type of pet.",)


def test_dataset_folder_itself_accepted(tmp_path):
    folder = write_pets(tmp_path)
    assert len(load_coop(folder, "OxfordPets").test) == 15


def test_missing_dataset_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="split_zhou_OxfordPets.json"):
        load_coop(tmp_path, "OxfordPets")


def test_missing_images_reported(tmp_path):
    folder = write_pets(tmp_path)
    (folder / "images/beagle_test_0.jpg").unlink()
    (folder / "images/bengal_train_3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2 of 125 listed images are missing") as err:
        load_coop(tmp_path, "OxfordPets")
    assert "beagle_test_0.jpg" in str(err.value)
    splits = load_coop(tmp_path, "OxfordPets", skip_missing=True)
    assert len(splits.test) == 14
    assert len(splits.train) == 99
    assert len(splits.missing) == 2


def test_label_gap_rejected(tmp_path):
    split = {"train": [["a.png", 0, "cat"], ["b.png", 2, "dog"]], "val": [], "test": []}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="without gaps"):
        read_split_file(path, check_files=False)


def test_two_names_for_label_rejected(tmp_path):
    split = {"train": [["a.png", 0, "cat"]], "val": [], "test": [["b.png", 0, "dog"]]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="two class names"):
        read_split_file(path, check_files=False)


def test_train_test_overlap_rejected(tmp_path):
    split = {"train": [["a.png", 0, "cat"]], "val": [], "test": [["a.png", 0, "cat"]]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="both a training split and the test split"):
        read_split_file(path, check_files=False)


def test_missing_split_key_rejected(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(ValueError, match="no 'test' list"):
        read_split_file(path, check_files=False)


def test_custom_split_file_image_dir(tmp_path):
    write_image(tmp_path / "images/a.png")
    write_image(tmp_path / "images/b.png")
    split = {
        "train": [["a.png", 0, "crème brûlée"]],
        "val": [],
        "test": [["b.png", 0, "crème brûlée"]],
    }
    path = tmp_path / "split_zhou_Desserts.json"
    path.write_text(json.dumps(split, ensure_ascii=False), encoding="utf-8")
    splits = read_split_file(path)
    assert splits.classnames == ["crème brûlée"]
    assert splits.train[0].path == tmp_path / "images/a.png"
    assert splits.templates == (DEFAULT_TEMPLATE,)


def test_imagenet_folders(tmp_path):
    folder = tmp_path / "imagenet"
    folder.mkdir()
    (folder / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    for split, count in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            for i in range(count):
                write_image(folder / "images" / split / wnid / f"{wnid}_{i}.JPEG")
    splits = load_coop(tmp_path, "ImageNet")
    assert splits.classnames == ["tench", "goldfish"]
    assert len(splits.train) == 6
    assert len(splits.test) == 4
    assert splits.val == []
    assert {s.label for s in splits.test} == {0, 1}


def test_aircraft_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    folder.mkdir()
    (folder / "variants.txt").write_text("707-320\nA300B4\n")
    for split, ids in (("train", ["1", "2"]), ("val", ["3"]), ("test", ["4", "5"])):
        lines = [f"{image_id} {'707-320' if int(image_id) % 2 else 'A300B4'}" for image_id in ids]
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for image_id in ids:
            write_image(folder / "images" / f"{image_id}.jpg")
    splits = load_coop(tmp_path, "FGVCAircraft")
    assert splits.classnames == ["707-320", "A300B4"]
    assert [s.label for s in splits.test] == [1, 0]
    assert splits.templates == ("a photo of a {}, a type of aircraft.",)


def test_templates_by_name():
    assert templates_for("DTD") == ("{} texture.",)
    assert templates_for("DescribableTextures") == ("{} texture.",)
    assert templates_for("EuroSAT") == ("a centered satellite photo of {}.",)
    assert templates_for("ImageNet") == ("a photo of a {}.",)
    assert templates_for("my-data") == (DEFAULT_TEMPLATE,)
    assert templates_for(None) == (DEFAULT_TEMPLATE,)


def test_base_to_new_split(tmp_path):
    write_pets(tmp_path)
    splits = load_coop(tmp_path, "OxfordPets")
    protocol = base_to_new(splits.classnames, splits.train, splits.test, shots=4, seed=1)
    # Five classes: the first half rounded up (three) are base, as CoOp divides them.
    assert protocol.base == [0, 1, 2]
    assert protocol.new == [3, 4]
    assert protocol.base_classnames == BREEDS[:3]
    assert len(protocol.train) == 3 * 4
    for label in protocol.base:
        assert sum(s.label == label for s in protocol.train) == 4
    assert {s.label for s in protocol.test_base} == {0, 1, 2}
    assert {s.label for s in protocol.test_new} == {3, 4}
    assert len(protocol.test_base) == 9
    assert len(protocol.test_new) == 6
    train_paths = {s.path for s in protocol.train}
    assert not train_paths & {s.path for s in splits.test}


def test_base_to_new_seeded(tmp_path):
    write_pets(tmp_path)
    splits = load_coop(tmp_path, "OxfordPets")
    first = base_to_new(splits.classnames, splits.train, splits.test, shots=4, seed=0)
    again = base_to_new(splits.classnames, splits.train, splits.test, shots=4, seed=0)
    other = base_to_new(splits.classnames, splits.train, splits.test, shots=4, seed=1)
    assert [s.path for s in first.train] == [s.path for s in again.train]
    assert {s.path for s in first.train} != {s.path for s in other.train}
