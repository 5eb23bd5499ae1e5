"""DomainBed folder loader on tiny generated trees with PACS's real folder names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from clipood.data.domainbed import DOMAINBED_DATASETS, check_target, load_domainbed

PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def write_png(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (shade, 80, 160)).save(path)


def write_pacs(root: Path, domains=PACS_DOMAINS, classes=PACS_CLASSES, per_class=2) -> Path:
    folder = root / "PACS"
    # Write domains in reverse so that directory listing order cannot produce the result.
    for domain in reversed(domains):
        for classname in reversed(classes):
            for i in range(per_class):
                write_png(folder / domain / classname / f"pic{i}.png", shade=i)
    return folder


def test_pacs_domain_order_and_classes(tmp_path):
    data = load_domainbed(write_pacs(tmp_path))
    assert list(data.domains) == PACS_DOMAINS
    assert data.classnames == PACS_CLASSES
    assert all(len(samples) == 14 for samples in data.domains.values())


def test_same_class_index_across_domains(tmp_path):
    data = load_domainbed(write_pacs(tmp_path))
    for domain, samples in data.domains.items():
        for sample in samples:
            assert sample.domain == domain
            assert data.classnames[sample.label] == sample.path.parent.name


def test_class_missing_in_one_domain_keeps_indices(tmp_path, caplog):
    folder = write_pacs(tmp_path, domains=["cartoon"], classes=["dog", "horse"])
    write_pacs(tmp_path, domains=["photo"], classes=["dog", "elephant", "horse"])
    with caplog.at_level(logging.WARNING):
        data = load_domainbed(folder)
    assert data.classnames == ["dog", "elephant", "horse"]
    cartoon_labels = {s.label for s in data.domains["cartoon"]}
    assert cartoon_labels == {0, 2}
    assert "elephant" in caplog.text


def test_extensions_hidden_and_sorted(tmp_path):
    folder = tmp_path / "PACS" / "photo" / "dog"
    for name in ["b.JPG", "a.jpeg", "c.Png", "d.webp", "e.TIFF", "f.bmp"]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}
        Image.new("RGB", (4, 4)).save(path, format=fmt.get(path.suffix[1:].lower(), "BMP"))
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    (tmp_path / "PACS" / ".cache").mkdir()
    data = load_domainbed(tmp_path / "PACS")
    names = [s.path.name for s in data.domains["photo"]]
    assert names == ["a.jpeg", "b.JPG", "c.Png", "d.webp", "e.TIFF", "f.bmp"]
    assert list(data.domains) == ["photo"]


def test_unknown_dataset_orders_alphabetically(tmp_path):
    root = tmp_path / "mydata"
    for domain in ["zeta", "Alpha", "beta"]:
        write_png(root / domain / "cls" / "x.png")
    assert list(load_domainbed(root).domains) == ["Alpha", "beta", "zeta"]


def test_domain_subset_keeps_dataset_order(tmp_path):
    data = load_domainbed(write_pacs(tmp_path), domains=["sketch", "art_painting"])
    assert list(data.domains) == ["art_painting", "sketch"]


def test_terra_incognita_registry_order(tmp_path):
    root = tmp_path / "terra_incognita"
    for domain in DOMAINBED_DATASETS["TerraIncognita"]:
        write_png(root / domain / "bobcat" / "x.png")
    assert tuple(load_domainbed(root).domains) == DOMAINBED_DATASETS["TerraIncognita"]


def test_missing_root_names_path(tmp_path):
    missing = tmp_path / "PACS_typo"
    with pytest.raises(FileNotFoundError, match="PACS_typo"):
        load_domainbed(missing)


def test_root_is_file(tmp_path):
    file = tmp_path / "PACS.zip"
    file.write_bytes(b"zip")
    with pytest.raises(NotADirectoryError, match="PACS.zip"):
        load_domainbed(file)


def test_root_without_domains(tmp_path):
    (tmp_path / "PACS").mkdir()
    with pytest.raises(ValueError, match="no domain folders"):
        load_domainbed(tmp_path / "PACS")


def test_domain_without_classes(tmp_path):
    folder = write_pacs(tmp_path, domains=["photo"])
    (folder / "sketch").mkdir()
    with pytest.raises(ValueError, match="sketch.*no class folders"):
        load_domainbed(folder)


def test_empty_class_folder_named(tmp_path):
    folder = write_pacs(tmp_path, domains=["photo"])
    (folder / "photo" / "zebra").mkdir()
    (folder / "photo" / "zebra" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"photo/zebra contains no images"):
        load_domainbed(folder)


def test_unknown_domain_lists_available(tmp_path):
    folder = write_pacs(tmp_path)
    with pytest.raises(ValueError, match="painting") as info:
        load_domainbed(folder, domains=["painting"])
    assert "art_painting" in str(info.value)


def test_check_target(tmp_path):
    data = load_domainbed(write_pacs(tmp_path))
    assert check_target(data, "sketch") == "sketch"
    with pytest.raises(ValueError, match="'Sketch'.*art_painting"):
        check_target(data, "Sketch")


def test_reads_every_shared_image_extension(tmp_path):
    from clipood.data.samples import IMAGE_EXTENSIONS

    folder = tmp_path / "PACS" / "photo" / "dog"
    folder.mkdir(parents=True)
    formats = {".ppm": "PPM", ".pgm": "PPM", ".gif": "GIF", ".ico": "ICO"}
    for suffix, fmt in formats.items():
        mode = "L" if suffix == ".pgm" else "RGB"
        Image.new(mode, (4, 4)).save(folder / f"x{suffix}", format=fmt)
    data = load_domainbed(tmp_path / "PACS")
    names = sorted(s.path.name for s in data.domains["photo"])
    # Pillow opens .ico too, but it is not a training image extension.
    assert names == ["x.gif", "x.pgm", "x.ppm"]
    assert ".ico" not in IMAGE_EXTENSIONS


def test_empty_class_message_lists_extensions(tmp_path):
    folder = write_pacs(tmp_path, domains=["photo"])
    (folder / "photo" / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"\.gif, \.jpeg, \.jpg, \.pgm, \.png, \.ppm"):
        load_domainbed(folder)
