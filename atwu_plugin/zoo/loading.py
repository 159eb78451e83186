"""Safe model loading: safetensors by default, no remote code unless asked for.

* Weights: only ``*.safetensors`` are loaded unless ``allow_pickle=True``; a directory with
  only pickled weights (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) is refused with
  a ``ValueError`` (unpickling runs arbitrary code; safetensors is plain data).
* Code: ``trust_remote_code=False`` by default, so a checkpoint whose config points at its own
  Python files (``auto_map``) is refused by transformers instead of executing them.
* Paths: a path that looks local (absolute, ``./``, ``~``, or more than ``org/name``) and does
  not exist is a ``FileNotFoundError`` naming it, not a confusing hub lookup.
"""

import os

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


def load_causal_lm(path: str, trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs):
    """Load a causal LM from a local directory (or hub id for online users).

    Pickled checkpoints (``pytorch_model.bin``, ...) are refused unless ``allow_pickle=True``:
    unpickling runs arbitrary code, safetensors does not. ``trust_remote_code`` stays off
    unless set: a checkpoint's own modelling code is never executed by default. A saved peft
    adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) loads as its
    base model with the adapter merged in."""
    path = _check_local(path, "model")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):  # a saved LoRA adapter: base + adapter, merged
        from atwu_plugin.trainers.adapters import load_merged

        return load_merged(path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, **kwargs)
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
            raise FileNotFoundError(f"{path}: no model weights found (expected *.safetensors)")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: no config.json (expected a save_pretrained directory)")
    return AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code, **kwargs
    )


def load_tokenizer(path: str, trust_remote_code: bool = False):
    path = _check_local(path, "tokenizer")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
