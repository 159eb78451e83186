"""One writer per output directory: a lock held while a run writes it.

``with output_dir_lock(out_dir, prog="atwu-leaderboard"):`` creates ``out_dir`` (refusing a
path that is a file) and takes an exclusive ``flock`` on ``out_dir/.atwu-lock``, whose text
names the holder (PID, host, start time, command). A second run on the same directory stops
at once with :class:`OutputDirLocked` naming that PID, instead of running every cell twice
and racing on the same files. The kernel drops the lock when its process dies (even on
SIGKILL), so a lock file left by a dead run is simply taken over; the file itself stays (it
is tiny) and its text is rewritten by the next holder.

Pure standard library. Platforms without ``fcntl`` (Windows) get the PID file only, with a
liveness check of the recorded PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "OutputDirLocked", "check_output_dir", "output_dir_lock"]

LOCK_NAME = ".atwu-lock"


class OutputDirLocked(RuntimeError):
    """Another live process holds the lock of this output directory."""


def check_output_dir(path: Union[str, os.PathLike], what: str = "output directory") -> Path:
    """``path`` as a Path; ``NotADirectoryError`` naming it when it (or a parent) is a file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            where = "" if p == path else f" (its parent {p} is a file)"
            raise NotADirectoryError(f"{path}: {what} is a file{where}; expected a directory (or a new path)")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown process"


@contextlib.contextmanager
def output_dir_lock(out_dir: Union[str, os.PathLike], prog: str = "", what: str = "output directory") -> Iterator[Path]:
    """Hold the lock of ``out_dir`` for the duration of the ``with`` block (see module doc)."""
    out = check_output_dir(out_dir, what)
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputDirLocked(
                    f"{out}: {what} is in use by another run ({_holder(lock_path)}); wait for it to finish, "
                    "or choose another output directory") from None
        else:  # pragma: no cover - PID file only
            text = _holder(lock_path)
            pid = int(text.split()[1]) if text.startswith("PID ") and text.split()[1].isdigit() else None
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise OutputDirLocked(f"{out}: {what} is in use by another run ({text}); wait for it to finish, "
                                      "or choose another output directory")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        command = " ".join([prog or Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()} since {stamp}: {command}\n".encode(), 0)
        yield out
    finally:
        os.close(fd)  # releases the flock


def lock_holder_pid(out_dir: Union[str, os.PathLike]) -> Optional[int]:
    """The PID recorded in ``out_dir``'s lock file (held or stale), or None."""
    text = _holder(Path(out_dir) / LOCK_NAME)
    parts = text.split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "PID" and parts[1].isdigit() else None
