"""atwu-plugin: ATWU and token-weighted LLM unlearning, as an OpenUnlearning plugin.

Layers (imports only go downward, no circles; tests/test_architecture.py checks it):
    cli > leaderboard > hosts > tasks > zoo > trainers > evals > data > weighting > losses
    > bottom (registry, plugins, tokens, utils, configs)
``losses`` and ``weighting`` import nothing but torch and the bottom modules.
"""

__version__ = "0.1.0"

import os as _os

from atwu_plugin.utils import portable_numerics as _portable_numerics

if _portable_numerics.requested():  # before any module of the package imports torch
    _portable_numerics.apply()

if _os.environ.get("ATWU_QUIET_LIBRARIES") == "1":  # set by atwu-demo for its worker processes
    from atwu_plugin.utils.quiet import silence_library_noise as _silence

    _silence()
