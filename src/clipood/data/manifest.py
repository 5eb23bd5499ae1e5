"""Custom labelled images: a plain image folder or a CSV manifest.

Image folder: ``ROOT/CLASS/IMAGE``, one domain, class names are the folder names.
CSV manifest: a header with ``path`` and ``label`` columns and an optional ``domain``
column. ``path`` is absolute or relative to the CSV file's folder and ``label`` is the
class name. Class names are sorted (Python string order), so label indices do not
depend on row order. A manifest with a ``domain`` column converts to a
``MultiDomainDataset`` for the domain-shift and in-the-wild protocols.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clipood.data.samples import ImageSample, image_extensions_text, is_image_file

if TYPE_CHECKING:
    from clipood.data.domainbed import MultiDomainDataset

REQUIRED_COLUMNS = ("path", "label")
EXAMPLES = 5


@dataclass
class LabelledImages:
    """Samples with class names in label order; ``domain`` is ``""`` without a domain column."""

    root: Path
    classnames: list[str]
    samples: list[ImageSample]
    # The CSV manifest the samples were read from; None for an image folder.
    source: Path | None = None

    @property
    def domains(self) -> list[str]:
        """Sorted domain names; empty when the data has no domain column."""
        return sorted({s.domain for s in self.samples if s.domain})

    def to_multi_domain(self) -> MultiDomainDataset:
        """Group the samples by domain for the domain-shift and in-the-wild protocols."""
        from clipood.data.domainbed import MultiDomainDataset

        if not self.domains:
            raise ValueError(
                f"{self.source or self.root} has no domain column; add a 'domain' column to "
                f"the CSV manifest to use it with the domain-shift or in-the-wild protocol"
            )
        domains = {name: [s for s in self.samples if s.domain == name] for name in self.domains}
        return MultiDomainDataset(
            root=self.root, classnames=self.classnames, domains=domains, source=self.source
        )


def load_labelled_images(
    path: Path | str, classnames: Sequence[str] | None = None
) -> LabelledImages:
    """Read a CSV manifest (``*.csv``) or an image folder."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".csv":
        return load_manifest(path, classnames)
    return load_image_folder(path, classnames)


def load_image_folder(root: Path | str, classnames: Sequence[str] | None = None) -> LabelledImages:
    """Read ``ROOT/CLASS/IMAGE``; every class folder needs at least one image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"image folder {root} has no class folders; expected ROOT/CLASS/IMAGE")
    rows = []
    for folder in folders:
        images = sorted(p for p in folder.iterdir() if is_image_file(p))
        if not images:
            raise ValueError(_empty_class_message(folder))
        rows.extend((image, folder.name, "") for image in images)
    return _build(root, rows, classnames)


def _empty_class_message(folder: Path) -> str:
    message = f"class folder {folder} contains no images ({image_extensions_text()})"
    if any(p.is_dir() for p in folder.iterdir()):
        message += "; it contains folders, so the path may be a DomainBed dataset root"
    return message + "; remove the folder or add images"


def load_manifest(path: Path | str, classnames: Sequence[str] | None = None) -> LabelledImages:
    """Read a CSV manifest; raise naming the row or the files on any problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CSV manifest {path} not found")
    # utf-8-sig drops the byte-order mark that spreadsheet programs write.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"CSV manifest {path} lacks column(s) {missing}; the header must contain "
                f"'path,label' and optionally 'domain', found {columns}"
            )
        has_domain = "domain" in columns
        rows = [_read_row(row, number, path, has_domain) for number, row in _rows(reader)]
    if not rows:
        raise ValueError(f"CSV manifest {path} lists no images")
    _check_files([image for image, _, _ in rows], path)
    return _build(path.parent, rows, classnames, source=path)


def _rows(reader: csv.DictReader):
    # Row numbers count the header as line 1, as a spreadsheet shows them.
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if any(row.values()):
            yield number, row


def _read_row(row: dict, number: int, path: Path, has_domain: bool) -> tuple[Path, str, str]:
    for column in REQUIRED_COLUMNS + (("domain",) if has_domain else ()):
        if not row.get(column):
            raise ValueError(f"CSV manifest {path}, line {number}: empty '{column}' value")
    image = Path(row["path"]).expanduser()
    if not image.is_absolute():
        image = path.parent / image
    return image, row["label"], row["domain"] if has_domain else ""


def _check_files(images: list[Path], source: Path) -> None:
    missing = [p for p in images if not p.is_file()]
    if missing:
        examples = ", ".join(str(p) for p in missing[:EXAMPLES])
        raise FileNotFoundError(
            f"CSV manifest {source}: {len(missing)} of {len(images)} images not found, "
            f"e.g. {examples}; paths are relative to the manifest's folder unless absolute"
        )


def _build(
    root: Path,
    rows: list[tuple[Path, str, str]],
    classnames: Sequence[str] | None,
    source: Path | None = None,
) -> LabelledImages:
    counts = Counter(label for _, label, _ in rows)
    if classnames is None:
        classnames = sorted(counts)
    classnames = list(classnames)
    unknown = sorted(set(counts) - set(classnames))
    if unknown:
        raise ValueError(f"{root}: labels {unknown[:EXAMPLES]} are not in the given class list")
    empty = [name for name in classnames if counts[name] == 0]
    if empty:
        raise ValueError(
            f"{root}: classes {empty[:EXAMPLES]} have no images; remove them from the class "
            f"list or add images"
        )
    index = {name: label for label, name in enumerate(classnames)}
    samples = [ImageSample(image, index[label], domain) for image, label, domain in rows]
    return LabelledImages(root=root, classnames=classnames, samples=samples, source=source)
