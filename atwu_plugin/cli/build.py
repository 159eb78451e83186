"""``atwu-build-demo``: build (or reuse) the embedded benchmark's cached data, tokenizer and tiny
models ahead of time, so ``atwu-demo`` / ``atwu-unlearn`` start with them ready.

    atwu-build-demo [--cache-dir C] [--smoke]

Prints the cache entry and the model folders. Exit codes: 0 built or reused; 1 the build
failed (nothing half-built is left in the cache); 2 bad arguments; 130 interrupted.
"""

import argparse
import sys
from typing import List, Optional

PROG = "atwu-build-demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=None, help="model cache (default: $ATWU_CACHE_DIR or ~/.cache/atwu-plugin)")
    p.add_argument("--smoke", action="store_true", help="the small test zoo (SMOKE_SPEC) instead of the default")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from atwu_plugin.utils.run_lock import check_output_dir
    from atwu_plugin.zoo.build import SMOKE_SPEC, ZooSpec, build_zoo, default_cache_dir

    try:
        cache = check_output_dir(args.cache_dir or default_cache_dir(), "cache directory")
        zoo = build_zoo(str(cache), SMOKE_SPEC if args.smoke else ZooSpec())
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the partial build was removed (rerun to build again)", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"zoo: {zoo.root}")
    print(f"models: target={zoo.target} base={zoo.base} retain={zoo.retain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
