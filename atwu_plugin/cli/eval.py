"""``atwu-eval``: evaluate a model.

With an OpenUnlearning checkout (``$OPEN_UNLEARNING_ROOT`` or ``--ou-root``) this runs OU's own
``src/eval.py`` in that checkout with the given Hydra overrides::

    atwu-eval --cpu experiment=eval/tofu/default \\
        model.model_args.pretrained_model_name_or_path=saves/unlearn/tofu_atwu task_name=tofu_atwu_eval

Without OU it runs the lite host (``atwu_plugin.hosts.lite.run_lite``, with ``args.script == "eval"``).
"""

import sys
from typing import List, Optional

from atwu_plugin.cli.unlearn import build_parser, parse, run
from atwu_plugin.hosts.openunlearning import run_openunlearning  # noqa: F401  (public API)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(build_parser("atwu-eval", __doc__.split("\n\n")[0]), argv)
    return run("atwu-eval", "eval", args)


if __name__ == "__main__":
    sys.exit(main())
