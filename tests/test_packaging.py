"""`pip install /path/to/atwu-plugin` (non-editable; pip builds in place) leaves the checkout
clean: the build backend (build_backend/atwu_build_backend.py) builds in a temporary copy, so
no build/ or *.egg-info appears in the source tree, and the wheel still carries the package,
its configs and the Hydra SearchPathPlugin (without a hydra_plugins/__init__.py)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (what a fresh clone has), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in filter(None, listed.stdout.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def test_wheel_build_leaves_the_source_tree_clean(tmp_path):
    src = _tracked_copy(tmp_path / "atwu-plugin")
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(src), "-w", str(tmp_path / "wheels")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    after = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    assert after == before, sorted(set(after) - set(before))[:10]
    (wheel,) = (tmp_path / "wheels").glob("atwu_plugin-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hydra_plugins/atwu_plugin_searchpath/__init__.py" in names
    assert "hydra_plugins/__init__.py" not in names
    assert "atwu_plugin/configs/trainer/TW_GradDiff.yaml" in names
    assert not [n for n in names if n.startswith("build_backend")]
