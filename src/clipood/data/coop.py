"""The 11 open-class datasets in the layout CoOp's data preparation leaves on disk.

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022) fixes a
train/val/test split for each dataset in a JSON file
``ROOT/<folder>/split_zhou_<Name>.json`` of the form
``{"train": [[relative_path, label, class_name], ...], "val": [...], "test": [...]}``
with paths relative to the dataset's image folder. Two datasets have no such file:
ImageNet is read from ``imagenet/classnames.txt`` (``wnid class name`` per line) and
the ``images/train`` and ``images/val`` folders, with the val folder as the test set
and no val split; FGVCAircraft is read from ``variants.txt`` and
``images_variant_{train,val,test}.txt``.

Base-to-new follows CoOp: classes sorted by label, the first half (rounded up) are
"base", the rest "new", and training uses ``shots`` images per base class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipood.data.samples import ImageSample
from clipood.data.splits import base_new_split, few_shot
from clipood.data.templates import templates_for

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MISSING_EXAMPLES = 5


@dataclass(frozen=True)
class CoopDataset:
    """Location of one open-class dataset under the data root.

    ``image_dir`` is relative to ``folder``; ``""`` means the dataset folder itself.
    ``split_file`` is ``None`` for the two datasets read from their own lists.
    """

    name: str
    folder: str
    image_dir: str
    split_file: str | None
    aliases: tuple[str, ...] = ()


COOP_DATASETS: dict[str, CoopDataset] = {
    d.name: d
    for d in (
        CoopDataset("ImageNet", "imagenet", "images", None),
        CoopDataset("Caltech101", "caltech-101", "101_ObjectCategories",
                    "split_zhou_Caltech101.json"),
        CoopDataset("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
        CoopDataset("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
        CoopDataset("Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                    ("OxfordFlowers",)),
        CoopDataset("Food101", "food-101", "images", "split_zhou_Food101.json"),
        CoopDataset("FGVCAircraft", "fgvc_aircraft", "images", None),
        CoopDataset("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
        CoopDataset("DTD", "dtd", "images", "split_zhou_DescribableTextures.json",
                    ("DescribableTextures",)),
        CoopDataset("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
        CoopDataset("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    )
}  # fmt: skip


@dataclass
class CoopSplits:
    """A dataset's class names (index = label) and its train, val and test samples."""

    name: str
    classnames: list[str]
    train: list[ImageSample]
    val: list[ImageSample]
    test: list[ImageSample]
    templates: tuple[str, ...] = ("a photo of a {}.",)
    missing: list[Path] = field(default_factory=list)


def coop_dataset(name: str) -> CoopDataset:
    """Look up a dataset by name, alias or folder name, case-insensitively."""
    for dataset in COOP_DATASETS.values():
        names = (dataset.name, dataset.folder, *dataset.aliases)
        if name.lower() in (n.lower() for n in names):
            return dataset
    raise ValueError(
        f"unknown open-class dataset {name!r}; expected one of {', '.join(COOP_DATASETS)}"
    )


def is_coop_dataset(name: str) -> bool:
    try:
        coop_dataset(name)
    except ValueError:
        return False
    return True


def marker_file(dataset: CoopDataset) -> str:
    """Return the file whose presence identifies the dataset folder."""
    if dataset.split_file:
        return dataset.split_file
    return "classnames.txt" if dataset.name == "ImageNet" else "variants.txt"


def dataset_dir(root: Path | str, dataset: CoopDataset) -> Path:
    """Find the dataset folder: ``root/<folder>``, or ``root`` itself if it is that folder."""
    root = Path(root).expanduser()
    marker = marker_file(dataset)
    for candidate in (root / dataset.folder, root):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(
        f"{dataset.name} not found: {root / dataset.folder / marker} does not exist; prepare "
        f"the dataset as CoOp's DATASETS.md describes and pass the data root that contains "
        f"the '{dataset.folder}' folder"
    )


def load_coop(
    root: Path | str, name: str, *, check_files: bool = True, skip_missing: bool = False
) -> CoopSplits:
    """Read one of the 11 datasets from the data root ``root``.

    Raises FileNotFoundError if any listed image is missing, unless ``skip_missing``
    (then the missing images are dropped and listed in ``CoopSplits.missing``).
    """
    dataset = coop_dataset(name)
    folder = dataset_dir(root, dataset)
    image_dir = folder / dataset.image_dir
    if dataset.name == "ImageNet":
        splits = _read_imagenet(folder)
    elif dataset.name == "FGVCAircraft":
        splits = _read_aircraft(folder, image_dir)
    else:
        splits = read_split_file(folder / dataset.split_file, image_dir, check_files=False)
    splits.name = dataset.name
    splits.templates = templates_for(dataset.name)
    return check_files_exist(splits, skip_missing) if check_files else splits


def read_split_file(
    path: Path | str,
    image_dir: Path | str | None = None,
    *,
    name: str | None = None,
    check_files: bool = True,
    skip_missing: bool = False,
) -> CoopSplits:
    """Read a CoOp-style split file into samples and label-ordered class names.

    ``image_dir`` defaults to the known image folder when the file name is a known
    dataset's ``split_zhou_<Name>.json``, else to ``images/`` next to the file if that
    exists, else to the file's folder.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"split file {path} is not valid JSON: {err}") from err
    image_dir = Path(image_dir) if image_dir is not None else default_image_dir(path)
    name = name or path.stem.removeprefix("split_zhou_")
    entries = {split: _split_entries(data, split, path) for split in SPLITS}
    classnames = classnames_from_labels(
        ((int(label), str(cls)) for rows in entries.values() for _, label, cls in rows), path
    )
    samples = {
        split: [ImageSample(image_dir / rel, int(label)) for rel, label, _ in rows]
        for split, rows in entries.items()
    }
    splits = CoopSplits(name, classnames, samples["train"], samples["val"], samples["test"],
                        templates_for(name))  # fmt: skip
    check_disjoint(splits, path)
    return check_files_exist(splits, skip_missing) if check_files else splits


def default_image_dir(split_path: Path) -> Path:
    stem = split_path.stem.removeprefix("split_zhou_")
    for dataset in COOP_DATASETS.values():
        if dataset.split_file == split_path.name or stem in (dataset.name, *dataset.aliases):
            return split_path.parent / dataset.image_dir
    images = split_path.parent / "images"
    return images if images.is_dir() else split_path.parent


def _split_entries(data: object, split: str, path: Path) -> list[tuple[str, int, str]]:
    if not isinstance(data, dict) or split not in data:
        raise ValueError(f"split file {path} has no {split!r} list; expected keys {SPLITS}")
    rows = []
    for index, row in enumerate(data[split]):
        if not isinstance(row, list | tuple) or len(row) != 3:
            raise ValueError(
                f"split file {path}: {split}[{index}] is {row!r}; expected "
                f"[relative_path, label, class_name]"
            )
        rows.append((str(row[0]), int(row[1]), str(row[2])))
    return rows


def classnames_from_labels(pairs: Iterable[tuple[int, str]], source: object) -> list[str]:
    """Return class names ordered by label; labels must run 0..K-1, one name each."""
    names: dict[int, str] = {}
    for label, classname in pairs:
        if names.setdefault(label, classname) != classname:
            raise ValueError(
                f"{source}: label {label} has two class names, {names[label]!r} and "
                f"{classname!r}; each label needs exactly one name"
            )
    if not names:
        raise ValueError(f"{source} lists no images")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if min(names) < 0 or missing:
        raise ValueError(
            f"{source}: labels must run from 0 to {len(names) - 1} without gaps; "
            f"missing labels {missing[:10]}, smallest label {min(names)}"
        )
    return [names[label] for label in range(len(names))]


def check_disjoint(splits: CoopSplits, source: object) -> None:
    """Raise if an image is listed in both the train (or val) split and the test split."""
    test = {sample.path for sample in splits.test}
    shared = [s.path for s in (*splits.train, *splits.val) if s.path in test]
    if shared:
        raise ValueError(
            f"{source}: {len(shared)} images are in both a training split and the test "
            f"split, e.g. {[str(p) for p in shared[:MISSING_EXAMPLES]]}"
        )


def check_files_exist(splits: CoopSplits, skip_missing: bool = False) -> CoopSplits:
    """Raise FileNotFoundError naming missing images, or drop them if ``skip_missing``."""
    everything = (*splits.train, *splits.val, *splits.test)
    missing = sorted({s.path for s in everything if not s.path.is_file()})
    if not missing:
        return splits
    examples = ", ".join(str(p) for p in missing[:MISSING_EXAMPLES])
    if not skip_missing:
        raise FileNotFoundError(
            f"{splits.name}: {len(missing)} of {len(everything)} listed images are missing, "
            f"e.g. {examples}; check the data root, or skip them with --skip-missing"
        )
    log.warning("%s: skipping %d missing images, e.g. %s", splits.name, len(missing), examples)
    gone = set(missing)
    splits.train = [s for s in splits.train if s.path not in gone]
    splits.val = [s for s in splits.val if s.path not in gone]
    splits.test = [s for s in splits.test if s.path not in gone]
    splits.missing = missing
    return splits


def _read_imagenet(folder: Path) -> CoopSplits:
    wnid_names = {}
    for line in (folder / "classnames.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, classname = line.strip().partition(" ")
        if wnid:
            wnid_names[wnid] = classname
    image_root = folder / "images"
    train_dirs = _class_dirs(image_root / "train")
    classnames = []
    for wnid in train_dirs:
        if wnid not in wnid_names:
            raise ValueError(f"{folder / 'classnames.txt'} has no name for folder {wnid!r}")
        classnames.append(wnid_names[wnid])
    labels = {wnid: label for label, wnid in enumerate(train_dirs)}
    train = _folder_samples(image_root / "train", labels)
    test = _folder_samples(image_root / "val", labels)
    return CoopSplits("ImageNet", classnames, train, [], test)


def _class_dirs(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ImageNet folder {split_dir} not found")
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def _folder_samples(split_dir: Path, labels: dict[str, int]) -> list[ImageSample]:
    samples = []
    for wnid in _class_dirs(split_dir):
        if wnid not in labels:
            raise ValueError(f"{split_dir / wnid} is not a class of the train folder")
        files = sorted(p for p in (split_dir / wnid).iterdir() if not p.name.startswith("."))
        samples.extend(ImageSample(p, labels[wnid]) for p in files)
    return samples


def _read_aircraft(folder: Path, image_dir: Path) -> CoopSplits:
    variants = (folder / "variants.txt").read_text(encoding="utf-8").splitlines()
    classnames = [line.strip() for line in variants if line.strip()]
    labels = {name: label for label, name in enumerate(classnames)}
    splits = {}
    for split in SPLITS:
        samples = []
        list_file = folder / f"images_variant_{split}.txt"
        for line in list_file.read_text(encoding="utf-8").splitlines():
            image_id, _, variant = line.strip().partition(" ")
            if not image_id:
                continue
            if variant not in labels:
                raise ValueError(f"{list_file}: variant {variant!r} is not in variants.txt")
            samples.append(ImageSample(image_dir / f"{image_id}.jpg", labels[variant]))
        splits[split] = samples
    return CoopSplits("FGVCAircraft", classnames, splits["train"], splits["val"], splits["test"])


@dataclass
class BaseNewSplit:
    """The base-to-new protocol's samples: k-shot base training, base and new tests.

    Base classes are labels ``0..len(base)-1``, so the training labels index
    ``classnames[:len(base)]`` directly. Test samples keep their labels among all
    classes, and new-class accuracy classifies among ``new`` only.
    """

    classnames: list[str]
    base: list[int]
    new: list[int]
    train: list[ImageSample]
    test_base: list[ImageSample]
    test_new: list[ImageSample]

    @property
    def base_classnames(self) -> list[str]:
        return [self.classnames[i] for i in self.base]

    @property
    def new_classnames(self) -> list[str]:
        return [self.classnames[i] for i in self.new]


def base_to_new(
    classnames: Sequence[str],
    train: Sequence[ImageSample],
    test: Sequence[ImageSample],
    shots: int = 16,
    seed: int = 0,
) -> BaseNewSplit:
    """Split classes into base and new and sample ``shots`` training images per base class.

    A base class with fewer than ``shots`` training images keeps all of them, as CoOp's
    few-shot sampler does.
    """
    base, new = base_new_split(len(classnames))
    base_set, new_set = set(base), set(new)
    base_train = [s for s in train if s.label in base_set]
    shots_train = few_shot(base_train, shots, seed, classes=base, allow_fewer=True)
    return BaseNewSplit(
        classnames=list(classnames),
        base=list(base),
        new=list(new),
        train=list(shots_train),
        test_base=[s for s in test if s.label in base_set],
        test_new=[s for s in test if s.label in new_set],
    )
