"""Console output piped into a reader that stops early (``atwu-regress ... | head``), and JSON
files that are not UTF-8 for every reader of utils/jsonfile.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from atwu_plugin.utils.jsonfile import read_json

ROOT = Path(__file__).parents[1]
SCRIPT = """
import sys
from atwu_plugin.cli.pipes import quiet_on_closed_pipe

def main():
    for i in range(200000):
        print(f"row {i} " + "x" * 60)
    return 3

sys.exit({wrap}(main)())
"""


@pytest.mark.parametrize("wrapped", [True, False])
def test_closed_pipe_exits_quietly(wrapped):
    code = SCRIPT.replace("{wrap}", "quiet_on_closed_pipe" if wrapped else "")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.readline().startswith(b"row 0")
    proc.stdout.close()  # the reader goes away, as `head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    if wrapped:
        assert proc.returncode == 0 and err == ""
    else:  # the check can fail: without the wrapper Python prints the traceback
        assert "BrokenPipeError" in err


def test_read_json_names_a_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_bytes(b'{"a":\n "caf\xe9"}')
    with pytest.raises(RuntimeError, match=r"results\.json: not UTF-8 text \(invalid byte 0xe9 at line 2\); "
                                           r"expected a JSON file"):
        read_json(bad, RuntimeError)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json(bom) == {"a": 1}
