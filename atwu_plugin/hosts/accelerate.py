"""Accelerate configs for DeepSpeed ZeRO launches, ready to use from any directory.

The packaged accelerate YAMLs (``atwu_plugin/configs/accelerate/{zero2,zero3,zero2_cpu,zero3_cpu}.yaml``)
name their DeepSpeed JSON relative to themselves, but accelerate opens ``deepspeed_config_file``
relative to the *current directory* (OU's own config does the same, and only works from OU's
root). :func:`write_config` writes a copy whose JSON path is absolute, with the number of
processes set. Used by ``atwu-accelerate-config`` and by OU-host leaderboard cells.
"""

import os
import tempfile
from pathlib import Path

import yaml

ACCELERATE_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def config_names() -> list:
    return sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml"))


def resolved_config(name: str, num_processes: int | None = None) -> dict:
    """The accelerate config ``name`` with an absolute ``deepspeed_config_file``."""
    path = ACCELERATE_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown accelerate config {name!r}; expected one of {config_names()}")
    cfg = yaml.safe_load(path.read_text())
    ds = cfg.get("deepspeed_config") or {}
    if "deepspeed_config_file" in ds:
        ds["deepspeed_config_file"] = str(ACCELERATE_DIR / ds["deepspeed_config_file"])
    if num_processes is not None:
        if num_processes < 1:
            raise ValueError(f"--num-processes={num_processes}: expected >= 1")
        cfg["num_processes"] = num_processes
    return cfg


def write_config(name: str, out: str | None = None, num_processes: int | None = None) -> str:
    cfg = resolved_config(name, num_processes)
    if out is None:
        out = os.path.join(tempfile.gettempdir(), f"atwu-accelerate-{name}-{cfg['num_processes']}.yaml")
    elif os.path.isdir(out):
        raise ValueError(f"--output {out}: is a directory; expected the path of the YAML file to write")
    from atwu_plugin.utils.atomic import atomic_write_text

    atomic_write_text(out, yaml.safe_dump(cfg, sort_keys=False))
    return out
