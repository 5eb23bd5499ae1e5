"""Image folders and CSV manifests: class order, domains, unicode names, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from clipood.data.manifest import load_image_folder, load_labelled_images, load_manifest
from clipood.models.base import prompt_text

UNICODE_CLASSES = ["crème brûlée", "Tyrannosaurus_rex", "apple pie"]


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_image_folder_sorted_classes(tmp_path):
    for name in UNICODE_CLASSES:
        for i in range(2):
            write_image(tmp_path / name / f"{name}-{i}.png")
    (tmp_path / "apple pie" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path)
    assert data.classnames == sorted(UNICODE_CLASSES)
    assert len(data.samples) == 6
    assert data.domains == []
    index = data.classnames.index("crème brûlée")
    paths = [s.path.name for s in data.samples if s.label == index]
    assert paths == ["crème brûlée-0.png", "crème brûlée-1.png"]


def test_prompt_text_of_unicode_names():
    assert prompt_text("Tyrannosaurus_rex") == "Tyrannosaurus rex"
    assert prompt_text("crème brûlée") == "crème brûlée"


def test_image_folder_empty_class_rejected(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    with pytest.raises(ValueError, match="dog contains no images"):
        load_image_folder(tmp_path)


def test_domainbed_root_hint(tmp_path):
    write_image(tmp_path / "photo" / "dog" / "a.png")
    with pytest.raises(ValueError, match="DomainBed"):
        load_image_folder(tmp_path)


def test_manifest_relative_absolute_and_domains(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    outside = tmp_path / "elsewhere" / "c.png"
    write_image(outside)
    csv_path = write_csv(
        tmp_path / "data.csv",
        [
            "path,label,domain",
            "img/a.png,Tyrannosaurus_rex,sketch",
            "img/b.png,crème brûlée,photo",
            f"{outside},crème brûlée,sketch",
        ],
    )
    data = load_manifest(csv_path)
    assert data.classnames == ["Tyrannosaurus_rex", "crème brûlée"]
    assert [s.label for s in data.samples] == [0, 1, 1]
    assert data.samples[0].path == tmp_path / "img" / "a.png"
    assert data.samples[2].path == outside
    assert data.domains == ["photo", "sketch"]
    multi = data.to_multi_domain()
    assert list(multi.domains) == ["photo", "sketch"]
    assert len(multi.domains["sketch"]) == 2
    assert multi.classnames == data.classnames


def test_manifest_without_domain_column(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", ["path,label", "a.png,cat"])
    data = load_labelled_images(csv_path)
    assert data.classnames == ["cat"]
    assert data.samples[0].domain == ""
    with pytest.raises(ValueError, match="no domain column"):
        data.to_multi_domain()


def test_manifest_byte_order_mark(tmp_path):
    write_image(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.png,cat\n", encoding="utf-8-sig")
    assert load_manifest(path).classnames == ["cat"]


def test_manifest_missing_column(tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", ["file,label", "a.png,cat"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path'\]"):
        load_manifest(csv_path)


def test_manifest_missing_files_listed(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(
        tmp_path / "m.csv", ["path,label", "a.png,cat", "gone1.png,cat", "gone2.png,dog"]
    )
    with pytest.raises(FileNotFoundError, match="2 of 3 images not found") as err:
        load_manifest(csv_path)
    assert "gone1.png" in str(err.value)
    assert "gone2.png" in str(err.value)


def test_manifest_empty(tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", ["path,label"])
    with pytest.raises(ValueError, match="lists no images"):
        load_manifest(csv_path)


def test_manifest_empty_label_value(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", ["path,label", "a.png,"])
    with pytest.raises(ValueError, match="line 2: empty 'label'"):
        load_manifest(csv_path)


def test_class_list_with_unused_class(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", ["path,label", "a.png,cat"])
    with pytest.raises(ValueError, match=r"classes \['dog'\] have no images"):
        load_manifest(csv_path, classnames=["cat", "dog"])
    with pytest.raises(ValueError, match="not in the given class list"):
        load_manifest(csv_path, classnames=["dog"])


def test_image_folder_reads_gif_and_skips_hidden(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "b.gif", format="GIF")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / ".c.gif", format="GIF")
    data = load_image_folder(tmp_path)
    assert [s.path.name for s in data.samples] == ["a.png", "b.gif"]


def test_empty_class_message_lists_extensions(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    with pytest.raises(ValueError, match=r"\.bmp, \.gif, \.jpeg"):
        load_image_folder(tmp_path)
