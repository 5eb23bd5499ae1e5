"""Offline benchmark builders on small generated source trees, plus one real build (slow)."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipood.data.benchmarks import (
    BENCHMARKS,
    SourcePaths,
    build_benchmark,
    openclipart,
    render,
    styles,
)
from clipood.data.benchmarks.writer import BuildPlan, PlannedImage, write_benchmark
from clipood.data.domainbed import load_domainbed

WILD_CLASSES = {"bird": ("animals/birds",), "hat": ("people/clothing/hats",)}


def draw_clipart(path: Path, shade: int, size: int = 48) -> None:
    """Write an RGBA PNG with a coloured ellipse on a transparent background."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 12, 40, 36), fill=(shade, 40, 200, 255))
    image.save(path)


def fake_openclipart(root: Path, per_class: int = 6) -> Path:
    png = root / "openclipart" / "png"
    for i in range(per_class):
        draw_clipart(png / "animals" / "birds" / f"bird_{i}.png", 30 * i)
        draw_clipart(png / "people" / "clothing" / "hats" / f"hat_{i}.png", 20 * i)
    return png


def fake_animal_mnist(root: Path, per_class: int = 4) -> Path:
    folder = root / "animal_mnist"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), per_class).astype(np.int64)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 6 : 10 + label, 8:20] = 255
    for name, array in (
        ("animal_data_version_3.gz", images),
        ("animal_label_version_3.gz", labels),
    ):
        with gzip.open(folder / name, "wb") as handle:
            pickle.dump(array, handle)
    return folder


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(root: Path, per_class: int = 4) -> Path:
    folder = root / "fashion"
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(10), per_class)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 4:24, 10:18] = 200
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    return folder


def fake_sources(root: Path) -> SourcePaths:
    return SourcePaths(
        openclipart=fake_openclipart(root),
        animal_mnist=fake_animal_mnist(root),
        fashion_mnist=fake_fashion_mnist(root),
        versions={"openclipart-png": "test", "animal-mnist": "test"},
    )


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_registry_names():
    assert sorted(BENCHMARKS) == ["offline-base-new", "offline-domains", "offline-wild"]


def test_unknown_benchmark_lists_names(tmp_path):
    with pytest.raises(ValueError, match="'offline-pacs'.*offline-domains"):
        build_benchmark("offline-pacs", tmp_path)


def test_wild_counts_match_files(tmp_path):
    sources = fake_sources(tmp_path / "src")
    folder = build_benchmark(
        "offline-wild", tmp_path / "out", sources=sources, classes=WILD_CLASSES, image_size=32
    )
    manifest = manifest_of(folder)
    data = load_domainbed(folder)
    assert list(data.domains) == ["clipart", "silhouette", "sketch"]
    assert data.classnames == ["bird", "hat"]
    for domain, samples in data.domains.items():
        assert manifest["domains"][domain]["total"] == len(samples) == 4
        assert manifest["domains"][domain]["per_class"] == {"bird": 2, "hat": 2}
    assert manifest["total_images"] == 12
    assert len(manifest["images"]) == 12
    with Image.open(data.domains["sketch"][0].path) as image:
        assert image.size == (32, 32)


def test_wild_domains_share_no_source(tmp_path):
    sources = fake_sources(tmp_path / "src")
    folder = build_benchmark("offline-wild", tmp_path / "out", sources=sources,
                             classes=WILD_CLASSES, image_size=32)  # fmt: skip
    origins = [entry[2] for entry in manifest_of(folder)["images"]]
    assert len(origins) == len(set(origins))


def test_second_build_reuses(tmp_path):
    sources = fake_sources(tmp_path / "src")
    options = {"sources": sources, "classes": WILD_CLASSES, "image_size": 32}
    folder = build_benchmark("offline-wild", tmp_path / "out", **options)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert build_benchmark("offline-wild", tmp_path / "out", **options) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


def test_force_and_changed_recipe_rebuild(tmp_path):
    sources = fake_sources(tmp_path / "src")
    options = {"sources": sources, "classes": WILD_CLASSES}
    folder = build_benchmark("offline-wild", tmp_path / "out", image_size=32, **options)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    build_benchmark("offline-wild", tmp_path / "out", image_size=32, force=True, **options)
    assert (folder / "manifest.json").stat().st_mtime_ns != stamp
    build_benchmark("offline-wild", tmp_path / "out", image_size=40, **options)
    assert manifest_of(folder)["recipe"]["image_size"] == 40
    with Image.open(next(folder.rglob("*.png"))) as image:
        assert image.size == (40, 40)


def test_missing_file_triggers_rebuild(tmp_path):
    sources = fake_sources(tmp_path / "src")
    options = {"sources": sources, "classes": WILD_CLASSES, "image_size": 32}
    folder = build_benchmark("offline-wild", tmp_path / "out", **options)
    victim = next(folder.rglob("*.png"))
    victim.unlink()
    build_benchmark("offline-wild", tmp_path / "out", **options)
    assert victim.exists()


def test_huge_image_skipped_and_recorded(tmp_path, monkeypatch):
    sources = fake_sources(tmp_path / "src")
    draw_clipart(sources.openclipart / "animals" / "birds" / "huge.png", 0, size=120)
    monkeypatch.setattr(openclipart, "MAX_PIXELS", 100 * 100)
    folder = build_benchmark("offline-wild", tmp_path / "out", sources=sources,
                             classes=WILD_CLASSES, image_size=32)  # fmt: skip
    skipped = manifest_of(folder)["skipped"]
    assert [entry["origin"] for entry in skipped] == ["animals/birds/huge.png"]
    assert "120x120" in skipped[0]["reason"]
    assert not list(folder.rglob("huge*.png"))


def test_base_new_split_file(tmp_path):
    sources = fake_sources(tmp_path / "src")
    folder = build_benchmark("offline-base-new", tmp_path / "out", sources=sources,
                             classes=WILD_CLASSES, image_size=32, grey_per_class=4)  # fmt: skip
    data = load_domainbed(folder)
    assert list(data.domains) == ["all"]
    assert len(data.classnames) == 21  # 2 clip-art + 10 clothing + 10 animals, bird shared
    split = json.loads((folder / "split_zhou_OfflineBaseNew.json").read_text())
    entries = split["train"] + split["val"] + split["test"]
    assert len(entries) == sum(len(s) for s in data.domains.values())
    for relpath, label, classname in entries:
        assert (folder / relpath).is_file()
        assert data.classnames[label] == classname
    bird = data.classnames.index("bird")
    assert sum(1 for entry in split["test"] if entry[1] == bird) == 5  # half of 6 + 4
    assert sum(1 for entry in split["val"] if entry[1] == bird) == 1


def _plan_that_fails(after: int) -> BuildPlan:
    def image() -> Image.Image:
        return Image.new("RGB", (8, 8), "white")

    def crash() -> Image.Image:
        raise RuntimeError("simulated crash in the middle of a build")

    items = [
        PlannedImage("photo", "dog", f"img{i}", "test", f"index {i}", "original",
                     crash if i == after else image)
        for i in range(2 * after)
    ]  # fmt: skip
    return BuildPlan(items, {"photo": "test domain"}, {"benchmark": "t"}, [])


def test_crash_leaves_no_tree(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_benchmark("toy", tmp_path, _plan_that_fails(after=3))
    assert not (tmp_path / "toy").exists()
    assert list(tmp_path.iterdir()) == []


def test_crash_keeps_previous_build(tmp_path):
    good = _plan_that_fails(after=3)
    good.images.pop(3)
    folder = write_benchmark("toy", tmp_path, good)
    before = manifest_of(folder)
    with pytest.raises(RuntimeError):
        write_benchmark("toy", tmp_path, _plan_that_fails(after=3), force=True)
    assert manifest_of(folder) == before
    assert len(list((folder / "photo" / "dog").iterdir())) == 5


def test_killed_build_partial_is_hidden_and_removed(tmp_path):
    # A process killed outright leaves its hidden partial folder behind.
    stale = tmp_path / ".toy.partial-12345"
    (stale / "photo" / "dog").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stale / "photo" / "dog" / "a.png")
    good = _plan_that_fails(after=2)
    good.images.pop(2)
    folder = write_benchmark("toy", tmp_path, good)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    assert manifest_of(folder)["total_images"] == 3


@pytest.mark.slow
def test_real_offline_domains(tmp_path):
    folder = build_benchmark("offline-domains", tmp_path)
    manifest = manifest_of(folder)
    data = load_domainbed(folder)
    assert list(data.domains) == ["clipart", "outline", "silhouette"]
    assert len(data.classnames) == 10
    for domain, samples in data.domains.items():
        assert manifest["domains"][domain]["total"] == len(samples)
    assert len(data.domains["silhouette"]) == 500
    # An outline that renders nearly blank is skipped and recorded, never stored.
    blank = [s for s in manifest["skipped"] if s["source"] == "animal-mnist"]
    assert all(s["reason"].startswith("nearly blank") for s in blank)
    assert len(data.domains["outline"]) == 500 - len(blank)
    assert len(data.domains["clipart"]) >= 100
    packages = {source["package"] for source in manifest["sources"]}
    assert packages == {"animal-mnist", "openclipart-png", "fonts-noto-color-emoji",
                        "fonts-symbola"}  # fmt: skip


def draw_faint(path: Path, alpha: int, size: int = 48) -> None:
    """Write a black ellipse outline drawn with the given alpha on a transparent canvas."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 12, 40, 36), outline=(0, 0, 0, alpha), width=3)
    image.save(path)


def test_ink_fraction_counts_pixels_far_from_white():
    image = Image.new("RGB", (10, 10), (255, 255, 255))
    image.putpixel((0, 0), (0, 0, 0))
    image.putpixel((1, 0), (255, 255, 200))  # 55 below white in blue: ink
    image.putpixel((2, 0), (230, 230, 230))  # 25 below white: not ink
    assert styles.ink_fraction(image) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="nearly blank: 0.00%"):
        styles.check_visible(Image.new("RGB", (10, 10), (240, 240, 240)))


def test_faint_clipart_left_out_before_sampling(tmp_path):
    sources = fake_sources(tmp_path / "src")
    draw_faint(sources.openclipart / "animals" / "birds" / "bird_faint.png", alpha=8)
    folder = build_benchmark("offline-wild", tmp_path / "out", sources=sources,
                             classes=WILD_CLASSES, image_size=32)  # fmt: skip
    manifest = manifest_of(folder)
    origins = [entry[2] for entry in manifest["images"]]
    assert "animals/birds/bird_faint.png" not in origins
    assert manifest["skipped"] == []
    assert manifest["domains"]["sketch"]["per_class"] == {"bird": 2, "hat": 2}


def test_blank_silhouette_render_rejected(tmp_path):
    path = tmp_path / "translucent.png"
    draw_faint(path, alpha=100)
    assert openclipart.is_visible_source(path)
    original = render.file_renderer(path, 32, "original")()
    assert styles.ink_fraction(original) > styles.MIN_INK_FRACTION
    with pytest.raises(ValueError, match="nearly blank"):
        render.file_renderer(path, 32, "silhouette")()


def test_alpha_power_steepens_translucent_pixels():
    square = Image.new("RGBA", (20, 20), (0, 0, 0, 128))
    plain = styles.fit_on_canvas(square, 40)
    steep = styles.fit_on_canvas(square, 40, alpha_power=3)
    assert plain.getpixel((20, 20))[3] == 128
    assert steep.getpixel((20, 20))[3] == round(255 * (128 / 255) ** 3)
    assert styles.flatten(plain).getpixel((20, 20)) == (127, 127, 127)
