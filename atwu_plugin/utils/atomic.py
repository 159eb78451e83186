"""Crash-safe file writes: readers see either the old file or the complete new one.

The data goes to a temporary file in the *same directory* (so ``os.replace`` is an atomic
rename on the same filesystem), is flushed and ``fsync``-ed, then renamed over the target;
the directory is fsync-ed too so the rename itself survives a power loss (best effort: not
every platform/filesystem allows opening a directory). On any error, including
``KeyboardInterrupt``, the temporary file is removed and the target is left untouched.

Temporary files are named ``.<name>.<random>.tmp``; nothing else in the package writes
files with that pattern, so leftovers (only possible after a hard kill between ``mkstemp`` and
``os.replace``) are easy to spot and safe to delete.

Pure standard library: usable for checkpoints, results, caches.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


def _default_mode() -> int:
    # mkstemp creates 0600 files; give new files the usual 0666 & ~umask instead.
    # Read once at import (main thread) because os.umask can only be read by setting it.
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


_NEW_FILE_MODE = _default_mode()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, some network filesystems
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents are created). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777  # keep the permissions of the file we replace
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """Serialize ``obj`` as strict JSON (NaN/Infinity are rejected: they are not JSON) and write
    it atomically, with a trailing newline. Serialization happens before the file is touched."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")
