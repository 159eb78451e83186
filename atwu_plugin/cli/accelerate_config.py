"""``atwu-accelerate-config NAME``: a ready-to-use accelerate config for DeepSpeed ZeRO.

The packaged accelerate YAMLs (``atwu_plugin/configs/accelerate/{zero2,zero3,zero2_cpu,zero3_cpu}.yaml``)
name their DeepSpeed JSON relative to themselves, but accelerate opens ``deepspeed_config_file``
relative to the *current directory* (OU's own config does the same, and only works from OU's
root). This command writes a copy whose JSON path is absolute, with the number of processes
set, and prints its path, so it works from any directory:

    accelerate launch --config_file "$(atwu-accelerate-config zero3 --num-processes 8)" src/train.py ...
"""

import argparse
import sys

from atwu_plugin.hosts.accelerate import ACCELERATE_DIR, config_names, resolved_config, write_config  # noqa: F401


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="atwu-accelerate-config", description=__doc__.splitlines()[0])
    p.add_argument("name", help=f"one of {config_names()}")
    p.add_argument("--num-processes", type=int, default=None, help="processes (GPUs) per machine")
    p.add_argument("-o", "--output", default=None, help="where to write it (default: a file in the temp dir)")
    a = p.parse_args(argv)
    try:
        print(write_config(a.name, a.output, a.num_processes))
    except (ValueError, OSError) as err:  # OSError: e.g. a parent of --output is a file, or not writable
        print(f"atwu-accelerate-config: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
