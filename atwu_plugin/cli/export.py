"""``atwu-export``: write a local dataset directory (TOFU layout) that OpenUnlearning loads offline.

    atwu-export embedded --out DIR [--seed 0] [--n-authors 200 --n-holdout 20 --qa-per-author 10]
    atwu-export dir --src TOFU_OR_BENCHMARK_DIR --out DIR
    atwu-export zoo --out DIR [--cache-dir C] [--smoke]     # the data the demo models were trained on

then, in an OpenUnlearning checkout (HF_DATASETS_OFFLINE=1 works):

    python src/train.py --config-name=unlearn.yaml experiment=unlearn/tofu/default \\
        +local_data=default paths.local_data=DIR task_name=...
"""

import argparse
import sys
from typing import List, Optional

from atwu_plugin.cli.pipes import quiet_on_closed_pipe

USAGE_HINT = """\
Use it in OpenUnlearning (atwu-plugin installed in OU's environment; docs/openunlearning.md has the CPU overrides):
  python src/train.py --config-name=unlearn.yaml experiment=unlearn/tofu/default +local_data=default paths.local_data={out} task_name=<name>
  python src/eval.py experiment=eval/tofu/default +local_data=default paths.local_data={out} task_name=<name>
"""
# only for the embedded benchmark's data (its tiny models read its text; TOFU's files need a TOFU model)
EMBEDDED_HINT = """\
Embedded benchmark with its tiny model:
  python src/train.py --config-name=unlearn.yaml experiment=unlearn/atwu_embedded/default paths.local_data={out} model.path=<target model dir> task_name=<name>
"""


def _is_embedded_benchmark(src: str) -> bool:
    """A ``write_benchmark`` directory (its ``meta.json`` names the generator version)."""
    import json
    from pathlib import Path

    meta = Path(src) / "meta.json"
    try:
        return meta.is_file() and "generator_version" in json.loads(meta.read_text())
    except (ValueError, OSError):
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atwu-export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="source", required=True)
    emb = sub.add_parser("embedded", help="generate the embedded benchmark and export it")
    emb.add_argument("--out", required=True, help="output directory")
    emb.add_argument("--seed", type=int, default=0)
    emb.add_argument("--n-authors", type=int, default=None)
    emb.add_argument("--n-holdout", type=int, default=None)
    emb.add_argument("--qa-per-author", type=int, default=None)
    d = sub.add_parser("dir", help="export a directory of TOFU JSON files or a write_benchmark directory")
    d.add_argument("--src", required=True, help="directory with <config name>.json files (JSON list or JSON Lines)")
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--names", default=None, help="comma-separated split names to export (default: all)")
    z = sub.add_parser("zoo", help="export the data of the cached demo models (atwu_plugin.zoo.build_zoo)")
    z.add_argument("--out", required=True, help="output directory")
    z.add_argument("--cache-dir", default=None, help="zoo cache (default: $ATWU_CACHE_DIR or ~/.cache/atwu-plugin)")
    z.add_argument("--smoke", action="store_true", help="the small test zoo (SMOKE_SPEC) instead of the default")
    return p


@quiet_on_closed_pipe
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from atwu_plugin.data import export

    from atwu_plugin.utils.run_lock import check_output_dir

    try:
        check_output_dir(args.out, "--out")  # before generating or building anything
        if args.source == "embedded":
            kwargs = {k: v for k, v in (("n_authors", args.n_authors), ("n_holdout", args.n_holdout), ("qa_per_author", args.qa_per_author)) if v is not None}
            out = export.export_embedded(args.out, seed=args.seed, **kwargs)
        elif args.source == "dir":
            names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
            out = export.export_directory(args.src, args.out, names=names)
        else:
            from atwu_plugin.zoo.build import SMOKE_SPEC, build_zoo

            zoo = build_zoo(args.cache_dir, SMOKE_SPEC if args.smoke else None)
            out = export.export_directory(zoo.data_dir, args.out)
            print(f"models: target={zoo.target} base={zoo.base} retain={zoo.retain}")
    except (OSError, ValueError) as err:  # FileNotFound/FileExists/NotADirectory/Permission errors name the path
        print(f"atwu-export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    print(USAGE_HINT.format(out=out))
    if args.source != "dir" or _is_embedded_benchmark(args.src):
        print(EMBEDDED_HINT.format(out=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
