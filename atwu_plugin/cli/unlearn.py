"""``atwu-unlearn``: unlearn with a plugin trainer.

With an OpenUnlearning checkout (``$OPEN_UNLEARNING_ROOT`` or ``--ou-root``) this runs OU's own
``src/train.py --config-name=unlearn.yaml`` in that checkout with the given Hydra overrides::

    atwu-unlearn --cpu experiment=unlearn/tofu/default trainer=ATWU task_name=tofu_atwu

Without OU it runs the lite host (``atwu_plugin.hosts.lite.run_lite``); configs that only OU
provides (OU's experiments, ``trainer=GradDiff``, ...) stop with a one-line error that
names ``OPEN_UNLEARNING_ROOT``. Flags may appear anywhere; everything else is passed to
Hydra unchanged.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from atwu_plugin.hosts.openunlearning import (  # noqa: F401  (run_openunlearning: public API)
    ENV_ROOT,
    OpenUnlearningNotFound,
    find_openunlearning_root,
    run_openunlearning,
)
from atwu_plugin.plugins import ENV_MODULES

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Config groups a Hydra override can select; the lite host only knows this package's own files.
GROUPS = ("experiment", "trainer", "model", "data", "eval", "collator")
DEFAULT_OVERRIDES = ("--config-name=unlearn.yaml",)


def build_parser(prog: str = "atwu-unlearn", description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description or __doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Any other argument is a Hydra override, e.g. experiment=unlearn/tofu/default trainer=ATWU.",
    )
    p.add_argument("--ou-root", default=None, help=f"OpenUnlearning checkout (default: ${ENV_ROOT})")
    p.add_argument("--cpu", action="store_true", help="add Hydra overrides that run OU's configs on a CPU")
    p.add_argument("--plugins", default=None, help=f"comma-separated plugin modules or .py files (sets ${ENV_MODULES})")
    p.add_argument("--python", default=None, help="Python of OU's environment (default: this one)")
    p.add_argument("--lite", action="store_true", help="use the lite host even if OpenUnlearning is available")
    return p


def parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides[1:] if overrides[:1] == ["--"] else overrides
    return args


def needs_openunlearning(overrides: Sequence[str]) -> Optional[str]:
    """The first override that only OpenUnlearning can resolve, or None.

    Experiments compose OU's data/eval configs; other groups need OU when this package has
    no config of that name (e.g. ``trainer=GradDiff``, ``model=Llama-3.2-1B-Instruct``)."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.startswith("-"):
            continue
        group = key.split("@")[0].strip("/")
        if group == "experiment":
            return override
        if group in GROUPS and not (CONFIG_DIR / group / f"{value}.yaml").is_file():
            return override
    return None


def run(prog: str, script: str, args: argparse.Namespace, default_overrides: Sequence[str] = ()) -> int:
    """OU branch if a checkout is configured, else the lite host; returns an exit code."""
    overrides = list(args.overrides)
    if args.plugins:
        os.environ[ENV_MODULES] = args.plugins  # inherited by OU's process
    if not args.lite:
        try:
            root = find_openunlearning_root(args.ou_root, required=False)
        except OpenUnlearningNotFound as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        if root is not None:
            has_config_name = any(o.startswith(("--config-name", "-cn")) for o in overrides)
            full = ([] if has_config_name else list(default_overrides)) + overrides
            return run_openunlearning(script, full, ou_root=str(root), cpu=args.cpu, python=args.python).returncode
        needed = needs_openunlearning(overrides)
        if needed:
            group = needed.lstrip("+~").partition("=")[0].split("@")[0].strip("/")
            local = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")) if group != "experiment" else []
            hint = f" (without it, {group}= is one of this package's configs: {', '.join(local)})" if local else ""
            print(
                f"{prog}: error: '{needed}' needs OpenUnlearning: set {ENV_ROOT} (or --ou-root) to a checkout of "
                f"github.com/locuslab/open-unlearning (the directory containing src/train.py and configs/){hint}",
                file=sys.stderr,
            )
            return 2
    from atwu_plugin.hosts import lite  # lazy: the lite host imports torch/transformers

    run_lite = getattr(lite, "run_lite", None)
    if run_lite is None:
        print(f"{prog}: error: the lite host (atwu_plugin.hosts.lite.run_lite) is not available", file=sys.stderr)
        return 2
    args.overrides = overrides
    args.script = script
    result = run_lite(args)
    if isinstance(result, bool):
        return 0 if result else 1
    return int(result or 0)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(build_parser(), argv)
    return run("atwu-unlearn", "train", args, DEFAULT_OVERRIDES)


if __name__ == "__main__":
    sys.exit(main())
