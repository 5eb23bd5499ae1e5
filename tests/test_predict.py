"""Prediction: ``clipood.inference.Classifier`` and ``clipood predict`` on a tiny OpenCLIP
model with generated images."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_open_clip_backend import write_tiny_open_clip

from clipood.inference import (
    ENSEMBLE_TEMPLATES,
    Classifier,
    check_templates,
    find_images,
)
from clipood.models import load_model

CLASSES = ["cat", "dog", "sea_lion"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_open_clip(tmp_path_factory.mktemp("model"), name="tinypredict")


@pytest.fixture(scope="module")
def model_string(tiny_files) -> str:
    config_path, checkpoint = tiny_files
    return f"open_clip:{config_path}:{checkpoint}"


@pytest.fixture(scope="module")
def classifier(model_string) -> Classifier:
    return Classifier(load_model(model_string), batch_size=2)


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(count)
    ]


def write_image_folder(folder: Path, count: int = 5) -> list[Path]:
    paths = []
    for index, image in enumerate(random_images(count)):
        path = folder / ("a" if index % 2 else "b") / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
    return sorted(paths)


# --- Classifier ----------------------------------------------------------------------


def test_scores_are_softmax_of_logits(classifier):
    images = random_images(5)
    rankings = classifier.classify(images, CLASSES, topk=3)
    model = classifier.model
    pixels = torch.stack([model.eval_transform(image) for image in images])
    with torch.no_grad():
        embeddings = F.normalize(model.image_encoder(pixels), dim=-1)
    text = model.class_embeddings(CLASSES)
    expected = (model.logit_scale * embeddings @ text.T).softmax(-1)
    assert len(rankings) == 5
    for ranking, row in zip(rankings, expected, strict=True):
        scores = dict(ranking)
        for index, name in enumerate(CLASSES):
            assert scores[name] == pytest.approx(row[index].item(), abs=1e-6)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_topk_order_and_sum(classifier):
    rankings = classifier.classify(random_images(4), CLASSES, topk=2)
    for ranking in rankings:
        assert len(ranking) == 2
        assert ranking[0][1] >= ranking[1][1]
        assert {label for label, _ in ranking} <= set(CLASSES)
        assert sum(score for _, score in ranking) <= 1.0 + 1e-6


def test_tensor_input_matches_pil(classifier):
    images = random_images(3)
    pixels = torch.stack([classifier.model.eval_transform(image) for image in images])
    from_pil = classifier.classify(images, CLASSES, topk=3)
    from_tensor = classifier.classify(pixels, CLASSES, topk=3)
    for a, b in zip(from_pil, from_tensor, strict=True):
        assert [label for label, _ in a] == [label for label, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)


def test_ensemble_templates_average(classifier):
    images = random_images(2)
    rankings = classifier.classify(images, CLASSES, templates=ENSEMBLE_TEMPLATES, topk=3)
    text = classifier.model.class_embeddings(CLASSES, ENSEMBLE_TEMPLATES)
    pixels = torch.stack([classifier.model.eval_transform(image) for image in images])
    with torch.no_grad():
        expected = classifier.model.logits(pixels, text).softmax(-1)
    assert dict(rankings[0])["cat"] == pytest.approx(expected[0, 0].item(), abs=1e-6)
    assert len(ENSEMBLE_TEMPLATES) >= 5
    assert check_templates(ENSEMBLE_TEMPLATES) == ENSEMBLE_TEMPLATES


@pytest.mark.parametrize(
    ("classnames", "topk", "message"),
    [
        (["cat", "dog", "cat"], 1, "duplicate class names: cat"),
        (["cat", " ", "dog"], 1, "class name number 2 is empty"),
        ([], 1, "no class names"),
        (["cat", "dog"], 3, "topk must be between 1 and the number of classes \\(2\\)"),
        (["cat", "dog"], 0, "topk must be between 1"),
    ],
)
def test_invalid_classes_and_topk(classifier, classnames, topk, message):
    with pytest.raises(ValueError, match=message):
        classifier.classify(random_images(1), classnames, topk=topk)


@pytest.mark.parametrize("template", ["a photo of a cat.", "a {} and a {}.", "a {} {0}"])
def test_invalid_template(classifier, template):
    with pytest.raises(ValueError, match="exactly one"):
        classifier.classify(random_images(1), CLASSES, templates=[template], topk=1)


def test_no_images(classifier):
    with pytest.raises(ValueError, match="no images"):
        classifier.classify([], CLASSES, topk=1)


def test_unreadable_file_gets_error_row(classifier, tmp_path):
    paths = write_image_folder(tmp_path / "images", count=3)
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"not an image")
    order = [paths[0], broken, paths[1], paths[2]]
    results = classifier.classify_files(order, CLASSES, topk=2)
    assert [result.path for result in results] == order
    assert results[1].ranking is None
    assert "cannot decode image" in results[1].error
    assert all(len(results[i].ranking) == 2 for i in (0, 2, 3))


def test_find_images_skips_hidden_and_other_files(tmp_path):
    paths = write_image_folder(tmp_path, count=3)
    (tmp_path / "notes.txt").write_text("not an image")
    hidden = tmp_path / ".cache"
    hidden.mkdir()
    random_images(1)[0].save(hidden / "x.png")
    assert find_images(tmp_path) == paths


def test_find_images_reads_what_training_reads(tmp_path):
    from clipood.data.domainbed import load_domainbed
    from clipood.data.manifest import load_image_folder

    folder = tmp_path / "data" / "photo" / "dog"
    folder.mkdir(parents=True)
    formats = {".png": "PNG", ".ppm": "PPM", ".gif": "GIF", ".ico": "ICO", ".pcx": "PCX"}
    for suffix, fmt in formats.items():
        random_images(1)[0].save(folder / f"x{suffix}", format=fmt)
    (folder / ".hidden.png").write_bytes(b"not an image")
    predicted = [path.name for path in find_images(tmp_path / "data")]
    trained = [s.path.name for s in load_domainbed(tmp_path / "data").domains["photo"]]
    folder_classes = [s.path.name for s in load_image_folder(tmp_path / "data" / "photo").samples]
    # Pillow also opens .ico and .pcx files, but training does not read them.
    assert predicted == ["x.gif", "x.png", "x.ppm"]
    assert trained == predicted
    assert folder_classes == predicted


def test_find_images_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=r"no image files found.*\.gif, \.jpeg"):
        find_images(tmp_path)


# --- command line --------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipood.cli.main", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_cli_predict_writes_csv(model_string, classifier, tmp_path):
    paths = write_image_folder(tmp_path / "images", count=4)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    output = tmp_path / "out" / "preds.csv"
    result = run_cli(
        "predict",
        "--model", model_string,
        "--images", str(tmp_path / "images"),
        "--classes", "cat,dog,sea_lion",
        "--topk", "2",
        "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "unreadable image" in result.stderr
    rows = read_csv(output)
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2", "error"]
    assert len(rows) == 1 + 5
    by_path = {row[0]: row for row in rows[1:]}
    broken_row = by_path[str(tmp_path / "images" / "broken.jpg")]
    assert broken_row[1:5] == ["", "", "", ""]
    assert "cannot decode image" in broken_row[5]
    expected = classifier.classify([Image.open(path) for path in paths], CLASSES, topk=2)
    for path, ranking in zip(paths, expected, strict=True):
        row = by_path[str(path)]
        assert row[1] == ranking[0][0]
        assert float(row[2]) == pytest.approx(ranking[0][1], abs=1e-6)
        assert float(row[2]) >= float(row[4])
        assert float(row[2]) + float(row[4]) <= 1.0 + 1e-6
        assert row[5] == ""


def test_cli_predict_classes_file_ensemble(model_string, tmp_path):
    write_image_folder(tmp_path / "images", count=2)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("cat\ndog\n\n")
    result = run_cli(
        "predict",
        "--model", model_string,
        "--images", str(tmp_path / "images"),
        "--classes-file", str(classes_file),
        "--templates", "ensemble",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(result.stdout.splitlines()))
    # Default top-k is 5, capped at the 2 classes given.
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2", "error"]
    assert len(rows) == 3
    for row in rows[1:]:
        assert float(row[2]) + float(row[4]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "cat,dog,cat"], "duplicate class names: cat"),
        (["--classes", "cat,dog", "--topk", "3"], "topk must be between 1"),
    ],
)
def test_cli_predict_input_errors(model_string, tmp_path, extra, message):
    write_image_folder(tmp_path / "images", count=1)
    result = run_cli(
        "predict", "--model", model_string, "--images", str(tmp_path / "images"), *extra
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_predict_empty_folder(model_string, tmp_path):
    (tmp_path / "images").mkdir()
    result = run_cli(
        "predict", "--model", model_string, "--images", str(tmp_path / "images"), "--classes", "a,b"
    )
    assert result.returncode == 2
    assert "no image files found" in result.stderr


def test_cli_predict_all_unreadable(model_string, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"broken")
    result = run_cli(
        "predict", "--model", model_string, "--images", str(tmp_path / "images"), "--classes", "a,b"
    )
    assert result.returncode == 2
    assert "none of the 1 images" in result.stderr


def write_run_folder(root: Path, model, classnames: list[str]) -> dict[str, dict]:
    """Write a run folder as training does: model.json plus final and averaged weights
    (here: the pretrained tower and a perturbed copy). Return the two states."""
    from clipood.engine.checkpoint import save_model_description, save_state_atomic
    from clipood.engine.run_folder import RunFolder

    run = RunFolder(root)
    final = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    averaged = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in final.items()
    }
    save_model_description(run, model.spec, classnames, ["a photo of a {}."])
    save_state_atomic(final, run.weights("final"))
    save_state_atomic(averaged, run.weights("averaged"))
    return {"final": final, "averaged": averaged}


def test_cli_predict_run_folder(model_string, tmp_path):
    model = load_model(model_string)
    states = write_run_folder(tmp_path / "run", model, CLASSES)
    paths = write_image_folder(tmp_path / "images", count=2)
    result = run_cli(
        "predict", "--run", str(tmp_path / "run"), "--images", str(tmp_path / "images")
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(result.stdout.splitlines()))
    assert len(rows[0]) == 1 + 2 * len(CLASSES) + 1
    model.image_encoder.load_state_dict(states["averaged"])
    expected = Classifier(model).classify([Image.open(path) for path in paths], CLASSES, topk=3)
    for row, ranking in zip(rows[1:], expected, strict=True):
        assert row[1] == ranking[0][0]
        assert float(row[2]) == pytest.approx(ranking[0][1], abs=1e-6)
