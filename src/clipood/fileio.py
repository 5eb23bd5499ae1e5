"""Atomic file writes shared by every layer: a reader sees the old file or the new one,
never a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def apply_default_permissions(path: Path) -> None:
    """Give ``path`` and everything below it the usual modes of new files and folders.

    Libraries that stage output through ``tempfile`` leave private modes (0600, 0700).
    """
    file_mode = _default_file_mode()
    folder_mode = file_mode | ((file_mode & 0o444) >> 2)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chmod(item, folder_mode if item.is_dir() else file_mode)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` and move the result to ``path`` in one rename.

    The temporary file sits in the same folder, so the rename never crosses file
    systems. The file gets the usual permissions of a new file (``0o666`` less the
    umask) rather than the private mode that ``mkstemp`` gives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, _default_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
