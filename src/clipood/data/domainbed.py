"""DomainBed folder layout: ``ROOT/DOMAIN/CLASS/IMAGE``.

The user passes the dataset folder itself (for example ``data/PACS``). Class indices
come from the sorted union of class folder names over all loaded domains, so a class
has the same index in every domain even where one domain lacks it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipood.data.samples import ImageSample, image_extensions_text, is_image_file

logger = logging.getLogger(__name__)

# Domain folder names of the standard DomainBed datasets, in DomainBed's order. DomainBed
# (facebookresearch/DomainBed, domainbed/datasets.py) sorts the domain folder names it finds,
# and its download script writes these spellings. Keys are matched case-insensitively against
# the dataset folder name, including the folder names that DomainBed's download script uses.
DOMAINBED_DATASETS: dict[str, tuple[str, ...]] = {
    "PACS": ("art_painting", "cartoon", "photo", "sketch"),
    "VLCS": ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    "OfficeHome": ("Art", "Clipart", "Product", "Real World"),
    "TerraIncognita": ("location_100", "location_38", "location_43", "location_46"),
    "DomainNet": ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
}
_DATASET_ALIASES = {
    "pacs": "PACS",
    "vlcs": "VLCS",
    "officehome": "OfficeHome",
    "office_home": "OfficeHome",
    "terraincognita": "TerraIncognita",
    "terra_incognita": "TerraIncognita",
    "domainnet": "DomainNet",
    "domain_net": "DomainNet",
}


@dataclass
class MultiDomainDataset:
    """Samples of several domains that share one list of class names."""

    root: Path
    classnames: list[str]
    domains: dict[str, list[ImageSample]]
    # The CSV manifest the samples were read from; None for a DomainBed folder.
    source: Path | None = None

    @property
    def location(self) -> Path:
        """The path that loads this dataset again: the CSV manifest or the root folder."""
        return self.source or self.root


def known_dataset(root: Path) -> str | None:
    """Return the registry name of a standard DomainBed dataset folder, or None."""
    return _DATASET_ALIASES.get(root.name.lower())


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _order_domains(root: Path, names: list[str]) -> list[str]:
    dataset = known_dataset(root)
    if dataset is None:
        return sorted(names)
    registry_order = DOMAINBED_DATASETS[dataset]
    known = [name for name in registry_order if name in names]
    return known + sorted(name for name in names if name not in registry_order)


def _check_root(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist; pass the folder that contains one "
            "sub-folder per domain (for example data/PACS)"
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"dataset path {root} is a file, not a folder; pass the folder that contains "
            "one sub-folder per domain"
        )


def _select_domains(root: Path, available: list[str], requested: Sequence[str] | None):
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = [requested]
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown} in {root}; available domains: {available}")
    return [name for name in available if name in requested]


def _class_folders(domain_dir: Path) -> dict[str, list[Path]]:
    class_dirs = _visible_dirs(domain_dir)
    if not class_dirs:
        raise ValueError(
            f"domain folder {domain_dir} contains no class folders; the layout is "
            "ROOT/DOMAIN/CLASS/IMAGE"
        )
    images = {}
    for class_dir in class_dirs:
        files = _images_in(class_dir)
        if not files:
            raise ValueError(
                f"class folder {class_dir} contains no images (extensions "
                f"{image_extensions_text()}); add images or remove the folder"
            )
        images[class_dir.name] = files
    return images


def load_domainbed(root: Path | str, domains: Sequence[str] | None = None) -> MultiDomainDataset:
    """Read a DomainBed-layout dataset folder.

    ``domains`` selects a subset (kept in the dataset's domain order). Raises
    ``FileNotFoundError``/``NotADirectoryError`` for a bad root and ``ValueError`` for an
    unknown domain, a root without domain folders, a domain without class folders or a
    class folder without images.
    """
    root = Path(root).expanduser()
    _check_root(root)
    available = _order_domains(root, [p.name for p in _visible_dirs(root)])
    if not available:
        raise ValueError(
            f"dataset folder {root} contains no domain folders; the layout is "
            "ROOT/DOMAIN/CLASS/IMAGE"
        )
    selected = _select_domains(root, available, domains)

    files_by_domain = {name: _class_folders(root / name) for name in selected}
    classnames = sorted(set().union(*(files.keys() for files in files_by_domain.values())))
    index = {name: i for i, name in enumerate(classnames)}

    samples: dict[str, list[ImageSample]] = {}
    for domain, files in files_by_domain.items():
        missing = [name for name in classnames if name not in files]
        if missing:
            logger.warning("domain %s of %s has no folder for classes %s", domain, root, missing)
        samples[domain] = [
            ImageSample(path=path, label=index[classname], domain=domain)
            for classname in sorted(files)
            for path in files[classname]
        ]
    return MultiDomainDataset(root=root, classnames=classnames, domains=samples)


def check_target(dataset: MultiDomainDataset, target: str) -> str:
    """Return ``target`` if it is one of the dataset's domains, else raise ``ValueError``."""
    if target not in dataset.domains:
        raise ValueError(
            f"unknown target domain {target!r} in {dataset.root}; available domains: "
            f"{list(dataset.domains)}"
        )
    return target
