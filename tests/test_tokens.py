"""atwu_plugin.tokens is the bottom module: torch-free, so reports and tools import it cheaply."""

import subprocess
import sys

from atwu_plugin.tokens import IGNORE_INDEX, KIND_IGNORE, KIND_LABELS, KIND_NAMES, KIND_NONE


def test_constants():
    assert IGNORE_INDEX == -100  # what HF / torch cross-entropy ignore
    assert KIND_NONE not in KIND_NAMES and KIND_IGNORE in KIND_NAMES
    assert set(KIND_LABELS) == set(KIND_NAMES) | {KIND_NONE}


def test_tokens_and_reports_import_without_torch():
    code = ("import sys, atwu_plugin.tokens, atwu_plugin.leaderboard.report, atwu_plugin.data.rwku; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
