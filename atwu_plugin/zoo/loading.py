"""Safe model loading: safetensors by default, no remote code unless asked for."""

import os

from transformers import AutoModelForCausalLM, AutoTokenizer


def load_causal_lm(path: str, trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs):
    """Load a causal LM from a local directory (or hub id for online users).

    Pickled ``pytorch_model.bin`` checkpoints are refused unless ``allow_pickle=True``:
    unpickling runs arbitrary code, safetensors does not.
    """
    if os.path.isdir(path):
        has_st = any(f.endswith(".safetensors") for f in os.listdir(path))
        has_pickle = any(f.endswith(".bin") or f.endswith(".pt") for f in os.listdir(path))
        if not has_st and has_pickle and not allow_pickle:
            raise ValueError(
                f"{path}: only pickled weights found (.bin/.pt); refusing to unpickle. "
                "Convert to safetensors or pass allow_pickle=True if you trust the file."
            )
        if not has_st and not has_pickle:
            raise FileNotFoundError(f"{path}: no model weights (*.safetensors) found")
    elif not path:
        raise ValueError("model path is empty")
    return AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code, **kwargs
    )


def load_tokenizer(path: str, trust_remote_code: bool = False):
    if not os.path.exists(path) and os.sep in path:
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
