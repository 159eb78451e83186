"""``atwu-merge-adapter``: merge a saved LoRA adapter into its base model, for evaluators that
load a full model (OpenUnlearning's ``src/eval.py``, ``atwu-eval model_path=...``).

    atwu-merge-adapter ADAPTER_DIR --out MERGED_DIR [--base BASE_MODEL_DIR] [--overwrite]

ADAPTER_DIR is what a LoRA run saves (``adapter_config.json`` + ``adapter_model.safetensors``:
``trainer.save_model`` / a ``checkpoint-N`` folder); the base model defaults to the adapter
config's ``base_model_name_or_path``. Until the console script is installed:
``python -m atwu_plugin.cli.merge_adapter``.
"""

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atwu-merge-adapter", description=__doc__.split("\n\n")[0])
    p.add_argument("adapter_dir", help="saved adapter directory (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--out", required=True, help="output directory for the merged model (safetensors)")
    p.add_argument("--base", default=None, help="base model directory (default: the adapter config's base_model_name_or_path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from atwu_plugin.zoo.merged_adapter import merge_adapter

    try:
        out = merge_adapter(args.adapter_dir, args.out, base_path=args.base, overwrite=args.overwrite)
    except (ValueError, OSError) as err:  # OSError: missing files, FileExistsError
        print(f"atwu-merge-adapter: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"atwu-merge-adapter: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
