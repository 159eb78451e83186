"""The OpenUnlearning (OU) host: rebase plugin trainers on OU's trainer, find an OU
checkout, run OU's own ``src/train.py`` / ``src/eval.py``.

OU is never imported at module import time: its modules (``trainer``, ``data``, ``evals``,
top-level names from OU's ``src/``) exist only inside OU's processes.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ENV_ROOT = "OPEN_UNLEARNING_ROOT"
SCRIPTS = {"train": "src/train.py", "eval": "src/eval.py"}

# Hydra overrides that make OU's stock configs run on a CPU (bf16/paged 8-bit optimizers,
# flash-attention and ``device_map: cuda`` assume a GPU). ``++`` adds or replaces a key.
CPU_OVERRIDES: Dict[str, List[str]] = {
    "train": [
        "++trainer.args.optim=adamw_torch",
        "++trainer.args.bf16=false",
        "++trainer.args.bf16_full_eval=false",
        "++trainer.args.use_cpu=true",
        # OU computes warmup steps from `warmup_epochs` divided by the CUDA device count (0 here)
        "++trainer.args.warmup_epochs=0",
        "++model.model_args.torch_dtype=float32",
        "++model.model_args.attn_implementation=eager",
    ],
    "eval": [
        "++model.model_args.device_map=cpu",
        "++model.model_args.torch_dtype=float32",
        "++model.model_args.attn_implementation=eager",
    ],
}


class OpenUnlearningNotFound(RuntimeError):
    """No usable OpenUnlearning checkout; the message says which variable to set."""


# ---- trainers ---------------------------------------------------------------------------
_REBASED: Dict[tuple, type] = {}


def openunlearning_trainer_base():
    """OU's ``UnlearnTrainer`` (importable only where OU's ``src/`` is on sys.path)."""
    from trainer.unlearn.base import UnlearnTrainer

    return UnlearnTrainer


def rebase_on_openunlearning(cls: type, base: Optional[type] = None) -> type:
    """``cls`` (a ``PluginUnlearnTrainer``) with OU's ``UnlearnTrainer`` added as a base.

    MRO: cls ... PluginUnlearnTrainer, UnlearnTrainer, FinetuneTrainer, transformers.Trainer.
    The plugin's loss and hooks come first; OU's ``evaluate`` (its evaluators),
    ``prediction_step`` and ``_prepare_deepspeed`` fill in what the plugin does not define,
    ``_passes_eval_kwargs`` makes the plugin hand ``evaluators``/``template_args`` to
    OU's constructor, and ``model_loader`` loads the models the trainer asks for by path.
    Classes already built on OU's trainer, or not plugin trainers, are returned unchanged.
    The same class is returned for repeated calls.
    """
    from atwu_plugin.trainers.base import PluginUnlearnTrainer
    from atwu_plugin.zoo.loading import load_causal_lm

    base = base or openunlearning_trainer_base()
    if not (isinstance(cls, type) and issubclass(cls, PluginUnlearnTrainer)) or issubclass(cls, base):
        return cls
    key = (cls, base)
    if key not in _REBASED:
        alias = f"OpenUnlearning_{cls.__name__}"
        rebased = type(
            cls.__name__,
            (cls, base),
            {"_passes_eval_kwargs": True, "model_loader": staticmethod(load_causal_lm),
             "__module__": __name__, "__qualname__": alias, "__doc__": cls.__doc__},
        )
        globals()[alias] = rebased  # so pickle finds it by module + qualname
        _REBASED[key] = rebased
    return _REBASED[key]


# ---- running OU -------------------------------------------------------------------------
def find_openunlearning_root(ou_root: Optional[str] = None, required: bool = True) -> Optional[Path]:
    """The OU checkout from ``ou_root`` or ``$OPEN_UNLEARNING_ROOT``, validated."""
    value = ou_root or os.environ.get(ENV_ROOT)
    if not value:
        if required:
            raise OpenUnlearningNotFound(
                f"OpenUnlearning not found: set {ENV_ROOT} to a checkout of github.com/locuslab/open-unlearning "
                "(the directory containing src/train.py and configs/)"
            )
        return None
    root = Path(value).expanduser().resolve()
    missing = [p for p in (*SCRIPTS.values(), "configs") if not (root / p).exists()]
    if missing:
        raise OpenUnlearningNotFound(
            f"{ENV_ROOT}={value} is not an OpenUnlearning checkout: missing {', '.join(missing)} "
            "(expected the root of github.com/locuslab/open-unlearning)"
        )
    return root


# Hydra command-line flags that take a value as the next argument (``--cfg job``, ``-cn x``).
_HYDRA_VALUE_FLAGS = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p", "--experimental-rerun"}
_HYDRA_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_hydra_flags(args: Sequence[str]):
    """``(flags, overrides)``: Hydra's ``--flags`` (with their values) and the overrides,
    each in their original order. Hydra's argparse rejects flags placed between overrides."""
    flags, overrides = [], []
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not arg.startswith(("++", "+", "~")):
            flags.append(arg)
            takes_value = arg in _HYDRA_VALUE_FLAGS
            optional_value = arg in ("--info", "-i") and i + 1 < len(args) and args[i + 1] in _HYDRA_INFO_TOPICS
            if (takes_value or optional_value) and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def openunlearning_command(
    script: str, overrides: Sequence[str] = (), ou_root: Optional[str] = None, cpu: bool = False, python: Optional[str] = None
) -> List[str]:
    if script not in SCRIPTS:
        raise ValueError(f"script must be one of {sorted(SCRIPTS)}, got {script!r}")
    root = find_openunlearning_root(ou_root)
    flags, overrides = split_hydra_flags(overrides)
    extra = CPU_OVERRIDES[script] if cpu else []
    # Hydra flags first; CPU overrides before the user's overrides, which win on the same key
    return [python or sys.executable, str(root / SCRIPTS[script]), *flags, *extra, *overrides]


def run_openunlearning(
    script: str,
    overrides: Sequence[str] = (),
    ou_root: Optional[str] = None,
    cpu: bool = False,
    python: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    check: bool = False,
    capture_output: bool = False,
) -> subprocess.CompletedProcess:
    """Run OU's ``src/train.py`` (``script="train"``) or ``src/eval.py`` (``"eval"``) with
    Hydra ``overrides``, in the OU checkout (cwd), with this Python (which must have OU's
    requirements and this package installed, so the plugin registers itself)."""
    root = find_openunlearning_root(ou_root)
    cmd = openunlearning_command(script, overrides, str(root), cpu, python)
    run_env = dict(os.environ)
    run_env.update(env or {})
    return subprocess.run(cmd, cwd=str(root), env=run_env, check=check, capture_output=capture_output, text=True)
