"""Build-once cache entries for the model zoos: lock, build into a temporary directory, rename.

An entry is complete when its marker file exists (written last, inside the temporary
directory, before the rename), so an interrupted build never leaves a half-written entry and
a rerun reuses a complete one. Concurrent builders of the same entry wait on a file lock.
"""

import glob
import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple

from filelock import FileLock

from atwu_plugin.utils import portable_numerics


def cache_key(fields: Mapping[str, Any]) -> str:
    """12 hex digits naming the cache entry of a model built from ``fields`` (JSON-able). A model
    trained with portable CPU numerics is another model than the native one: its own entry."""
    blob = json.dumps({**fields, **portable_numerics.key_fields()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_dir(root: Path, build_into: Callable[[Path], dict], marker: str = "manifest.json") -> dict:
    """Return the JSON marker of entry ``root``, first running ``build_into(tmp_dir)`` (which
    returns the marker's content) and renaming ``tmp_dir`` to ``root`` if it is missing."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if (root / marker).exists():
            try:
                return json.loads((root / marker).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:  # written atomically by us: damaged from outside
                raise ValueError(f"{root / marker}: damaged cache entry ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}); delete {root} to rebuild it") from None
        # Under the lock nobody else builds this entry: any "<root>.tmp-*" folder is the
        # leftover of a build that was killed (SIGKILL, power loss) and is removed.
        for stale in root.parent.glob(glob.escape(root.name) + ".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(str(root) + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        try:
            content = build_into(tmp)
            (tmp / marker).write_text(json.dumps(content, indent=2))
            if root.exists():  # a stale, marker-less directory from an interrupted older layout
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:  # an error or Ctrl-C: no half-built folder is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return content


def run_in_spawned_processes(jobs: Dict[str, Tuple[Callable, tuple]], max_workers: int = 0) -> Dict[str, object]:
    """Run independent ``fn(*args)`` jobs side by side, one single-threaded spawn process each
    (tiny models do not scale across threads; spawn avoids forking a process holding torch
    thread pools). Returns ``{name: result}``; a job's exception is re-raised here."""
    if not jobs:
        return {}
    workers = max_workers or min(len(jobs), os.cpu_count() or 1)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {name: pool.submit(fn, *args) for name, (fn, args) in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}
