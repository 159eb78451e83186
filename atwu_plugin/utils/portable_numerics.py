"""Portable CPU numerics: the same float results on every x86-64 CPU with AVX2.

A CPU run is deterministic on one machine, but not across machines: MKL picks its sgemm
kernels by CPU model (an AMX Xeon, an AVX-512 one and an AVX2 one each sum in their own
order) and ATen picks its vector kernels (softmax, log-softmax, ...) by instruction set.
Training amplifies that round-off: the quick regression spec run on an AMX Xeon moved SimNPO's
model utility by 0.7 of its tolerance and flipped a tie in WGA's span precision@k (7 tolerances)
against a reference made on another x86 machine; docs/regression.md has the numbers.

``ATWU_PORTABLE_NUMERICS=1`` pins both to their AVX2 code paths, which every x86-64 machine CI
runs on has: ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2,STRICT`` (MKL's conditional numerical
reproducibility, also independent of memory alignment) and ``ONEDNN_MAX_CPU_ISA=AVX2``. They
must be in the environment before torch is imported, which is why the package applies them in
its ``__init__`` (before any of its modules imports torch) and spawned workers inherit them.
The test suite and the regression targets run with it; everything else runs native kernels
(faster; deterministic on one machine).

This module imports no torch at top level (it runs before torch is imported).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Dict, MutableMapping

__all__ = ["PORTABLE_ENV", "SWITCH", "requested", "apply", "describe", "key_fields"]

SWITCH = "ATWU_PORTABLE_NUMERICS"
PORTABLE_ENV: Dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def requested(environ: MutableMapping[str, str] = os.environ) -> bool:
    value = environ.get(SWITCH, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{SWITCH}={value!r}; expected 1 (portable AVX2 numerics) or 0/unset (native kernels)")
    return value == "1"


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set the pinning variables (x86-64 only; returns whether it pinned).

    Raises RuntimeError if torch is already imported and the variables were not already set:
    ATen and MKL read them once, so setting them now would silently not take effect."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    missing = {k: v for k, v in PORTABLE_ENV.items() if environ.get(k) != v}
    if missing and "torch" in sys.modules:
        raise RuntimeError(
            f"{SWITCH}=1 but torch was imported before atwu_plugin, so these settings can no longer take "
            f"effect: {', '.join(f'{k}={v}' for k, v in missing.items())}. Set them in the environment "
            "before starting Python, or import atwu_plugin before torch.")
    environ.update(missing)
    return True


def describe(environ: MutableMapping[str, str] = os.environ) -> str:
    """'portable-avx2' when every pinning variable is set as :data:`PORTABLE_ENV` says, else 'native'."""
    return "portable-avx2" if all(environ.get(k) == v for k, v in PORTABLE_ENV.items()) else "native"


def key_fields(environ: MutableMapping[str, str] = os.environ) -> Dict[str, str]:
    """Extra fields for the cache key of a trained model: a model trained with portable numerics is
    another model than the native one (empty when native, so existing native caches stay valid)."""
    mode = describe(environ)
    return {} if mode == "native" else {"cpu_numerics": mode}
