"""ATWU_PORTABLE_NUMERICS: the suite's numbers must not depend on the CPU model CI gets."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from atwu_plugin.utils import portable_numerics as pn

X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.mark.skipif(not X86, reason="portable numerics pin x86-64 kernels only")
def test_this_suite_runs_on_the_avx2_code_paths():
    # conftest.py sets the switch before torch is imported; if it stopped taking effect the
    # regression reference would only be exact on the CPU model that made it.
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert pn.describe() == "portable-avx2"
    assert all(os.environ[k] == v for k, v in pn.PORTABLE_ENV.items())


def test_switch_values_and_clear_error():
    assert pn.requested({"ATWU_PORTABLE_NUMERICS": "1"}) and not pn.requested({})
    assert not pn.requested({"ATWU_PORTABLE_NUMERICS": "0"})
    with pytest.raises(ValueError, match="ATWU_PORTABLE_NUMERICS='yes'; expected 1"):
        pn.requested({"ATWU_PORTABLE_NUMERICS": "yes"})


@pytest.mark.skipif(not X86, reason="portable numerics pin x86-64 kernels only")
def test_apply_refuses_once_torch_is_imported_unless_already_set():
    # torch is imported in this process: setting the variables now would silently do nothing
    with pytest.raises(RuntimeError, match="torch was imported before atwu_plugin.*MKL_CBWR=AVX2,STRICT"):
        pn.apply({"ATEN_CPU_CAPABILITY": "avx2"})
    env = dict(pn.PORTABLE_ENV)
    assert pn.apply(env) and env == pn.PORTABLE_ENV  # inherited from the parent: fine


def test_model_cache_keys_tell_the_modes_apart():
    assert pn.key_fields({}) == {}  # native: existing caches keep their keys
    assert pn.key_fields(dict(pn.PORTABLE_ENV)) == {"cpu_numerics": "portable-avx2"}


@pytest.mark.skipif(not X86, reason="portable numerics pin x86-64 kernels only")
def test_a_fresh_interpreter_gets_the_pinned_kernels_from_the_package_import():
    code = ("import atwu_plugin, torch; torch.manual_seed(0); a = torch.randn(65, 129); "
            "print(torch.backends.cpu.get_cpu_capability(), (a @ a.T).sum().item())")
    env = {k: v for k, v in os.environ.items() if k not in pn.PORTABLE_ENV and k != "MKL_ENABLE_INSTRUCTIONS"}

    def run(**extra):
        out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1", **extra},
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    pinned = run(ATWU_PORTABLE_NUMERICS="1")
    assert pinned[0] == "AVX2"
    # MKL's AVX-512 instructions disabled by hand give the same sums: the pinning, not the CPU, decides
    assert run(ATWU_PORTABLE_NUMERICS="1", MKL_ENABLE_INSTRUCTIONS="AVX2") == pinned
