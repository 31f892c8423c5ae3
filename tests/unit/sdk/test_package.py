"""The client package stays light: importing it loads neither torch nor Ray."""

import subprocess
import sys

CHECK = """
import sys
import memserve, memserve.models, memserve.timeparse, memserve.cli
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "ray", "serve_app"})
assert not heavy, heavy
"""


def test_import_loads_neither_torch_nor_ray():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
