"""Safe model loading: safetensors by default, no remote code unless asked for.

* Weights: only ``*.safetensors`` are loaded unless ``allow_pickle=True``; a directory with
  only pickled weights (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) is refused with
  a ``ValueError`` (unpickling runs arbitrary code; safetensors is plain data).
* Code: ``trust_remote_code=False`` by default, so a checkpoint whose config points at its own
  Python files (``auto_map``) is refused by transformers instead of executing them.
* Paths: a path that looks local (absolute, ``./``, ``~``, or more than ``org/name``) and does
  not exist is a ``FileNotFoundError`` naming it, not a confusing hub lookup.
"""

import json
import os
import struct
from typing import Optional

from transformers import AutoModelForCausalLM, AutoTokenizer

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def looks_local(path: str) -> bool:
    """True unless ``path`` has the shape of a hub id (``name`` or ``org/name``)."""
    if path.startswith(("/", ".", "~")) or (os.sep != "/" and os.sep in path):
        return True
    return path.count("/") > 1


def _check_local(path: str, what: str) -> str:
    if not path:
        raise ValueError(f"{what} path is empty")
    expanded = os.path.expanduser(path)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise ValueError(f"{path}: expected a {what} directory (a save_pretrained output), got a file")
        return expanded
    if looks_local(path):
        raise FileNotFoundError(f"{path}: {what} directory not found")
    return path  # a hub id, for online users


def check_safetensors_file(path: str) -> None:
    """Raise ``ValueError`` naming ``path`` when it is not a complete safetensors file (empty,
    truncated, random bytes): its 8-byte header length, JSON header and the byte range of every
    tensor are checked against the file size without reading the tensors."""
    size = os.path.getsize(path)
    what = f"{path}: damaged safetensors file"
    fix = "re-save the model (a cached zoo model: delete its cache folder to rebuild it)"
    if size < 8:
        raise ValueError(f"{what} ({size} bytes, expected at least an 8-byte header); {fix}")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise ValueError(f"{what} (header of {header_len} bytes, but the file has {size} bytes); {fix}")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{what} (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{what} (its header is not a JSON object); {fix}")
    end = max((int(t["data_offsets"][1]) for k, t in header.items()
               if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t), default=0)
    if 8 + header_len + end > size:
        raise ValueError(f"{what} (truncated: {size} bytes, its header needs {8 + header_len + end}); {fix}")


def is_adapter_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def check_model_dir(path: str, allow_pickle: bool = False) -> str:
    """The checks of ``load_causal_lm`` without loading anything (milliseconds): the directory
    exists, holds ``config.json`` and safetensors weights (or pickled ones with
    ``allow_pickle``) and every safetensors file is complete. Returns the expanded path (a hub
    id unchanged)."""
    path = _check_local(path, "model")
    if is_adapter_dir(path):  # checked by load_merged (its base model and adapter weights)
        return path
    if os.path.isdir(path):
        files = os.listdir(path)
        has_st = any(f.endswith(".safetensors") for f in files)
        pickled = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if not has_st and pickled and not allow_pickle:
            raise ValueError(
                f"{path}: only pickled weights found ({', '.join(pickled)}); refusing to unpickle (it can run "
                "arbitrary code). Convert to safetensors (model.save_pretrained(dir, safe_serialization=True)) "
                "or pass allow_pickle=True if you trust the file."
            )
        if not has_st and not pickled:
            nested = os.path.join(path, "model")  # atwu-unlearn's output_dir holds the model in model/
            hint = f"; did you mean {nested} (the unlearned model of that run)?" if os.path.isfile(
                os.path.join(nested, "config.json")) else ""
            raise FileNotFoundError(f"{path}: no model weights found (expected *.safetensors){hint}")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: no config.json (expected a save_pretrained directory)")
        for name in sorted(f for f in files if f.endswith(".safetensors")):
            check_safetensors_file(os.path.join(path, name))
    return path


def load_causal_lm(path: str, trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs):
    """Load a causal LM from a local directory (or hub id for online users).

    Pickled checkpoints (``pytorch_model.bin``, ...) are refused unless ``allow_pickle=True``:
    unpickling runs arbitrary code, safetensors does not. ``trust_remote_code`` stays off
    unless set: a checkpoint's own modelling code is never executed by default. A saved peft
    adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) loads as its
    base model with the adapter merged in."""
    path = check_model_dir(path, allow_pickle)
    if is_adapter_dir(path):  # a saved LoRA adapter: base + adapter, merged
        return load_merged(path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, **kwargs)
    return AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code, **kwargs
    )


def read_adapter_base(adapter_dir: str) -> str:
    """The base model path a saved adapter names (its config's ``base_model_name_or_path``),
    after checking that the adapter's config and safetensors weights exist."""
    from atwu_plugin.trainers.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    cfg_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{adapter_dir}: no {ADAPTER_CONFIG} (expected a saved peft adapter directory)")
    if not os.path.isfile(os.path.join(adapter_dir, ADAPTER_WEIGHTS)):
        raise FileNotFoundError(f"{adapter_dir}: no {ADAPTER_WEIGHTS} (adapters are read from safetensors only)")
    with open(cfg_path) as f:
        base = json.load(f).get("base_model_name_or_path")
    return base


def load_merged(adapter_dir: str, base_path: Optional[str] = None, **load_kwargs):
    """Base model + the adapter of ``adapter_dir``, merged into plain weights (a
    ``PreTrainedModel`` without peft layers). ``base_path`` defaults to the adapter config's
    ``base_model_name_or_path``."""
    from peft import PeftModel

    adapter_dir = str(adapter_dir)
    saved_base = read_adapter_base(adapter_dir)  # also checks that both files exist
    base_path = base_path or saved_base
    if not base_path:
        raise ValueError(f"{adapter_dir}/adapter_config.json: base_model_name_or_path is empty; pass the base model path")
    base = load_causal_lm(base_path, **load_kwargs)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def load_tokenizer(path: str, trust_remote_code: bool = False):
    path = _check_local(path, "tokenizer")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
