"""Merge a saved LoRA adapter into its base model and save the result as a plain model
directory (``atwu-merge-adapter``), for evaluators that load a full model."""

import os
import shutil
from pathlib import Path
from typing import Optional

from atwu_plugin.zoo.loading import load_merged, load_tokenizer, read_adapter_base


def merge_adapter(adapter_dir: str, out_dir: str, base_path: Optional[str] = None, overwrite: bool = False) -> str:
    """Write base + adapter merged as a plain ``save_pretrained`` directory (safetensors; the
    tokenizer files of the adapter directory, else of the base, are copied along) for
    evaluators that load a full model. Written into a temporary sibling and renamed, so
    ``out_dir`` is either absent or complete."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    base_path = base_path or read_adapter_base(str(adapter_dir))
    merged = load_merged(adapter_dir, base_path)
    tmp = Path(f"{out}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tok_src = adapter_dir if os.path.isfile(os.path.join(adapter_dir, "tokenizer_config.json")) else base_path
        if os.path.isdir(tok_src) and os.path.isfile(os.path.join(tok_src, "tokenizer_config.json")):
            load_tokenizer(tok_src).save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
