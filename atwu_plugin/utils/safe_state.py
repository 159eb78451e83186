"""Save nested state (dicts/lists of tensors, numbers, strings) without pickle.

Tensors go to a ``.safetensors`` file, the structure to a JSON file next to it; both are
written atomically. Loading never unpickles, so a tampered checkpoint cannot run code.
"""

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from atwu_plugin.utils.atomic import atomic_write_text


def _encode(obj: Any, tensors: dict) -> Any:
    if torch.is_tensor(obj):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save value of type {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_decode(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(prefix: str, state: Any) -> None:
    """Write ``<prefix>.safetensors`` and ``<prefix>.json``."""
    tensors: dict = {}
    structure = _encode(state, tensors)
    tmp = f"{prefix}.safetensors.tmp-{os.getpid()}"
    save_file(tensors, tmp)
    os.replace(tmp, f"{prefix}.safetensors")
    atomic_write_text(f"{prefix}.json", json.dumps(structure))


def load_state(prefix: str) -> Any:
    for ext in (".json", ".safetensors"):
        if not os.path.exists(prefix + ext):
            raise FileNotFoundError(f"checkpoint state not found: {prefix + ext}")
    with open(f"{prefix}.json", encoding="utf-8") as f:
        structure = json.load(f)
    return _decode(structure, load_file(f"{prefix}.safetensors"))
