"""`serve_app` is the pure core: no module under it may import ray.

Each module is imported in a fresh interpreter with `sys.modules["ray"] = None`, which makes
any `import ray` (or `from ray... import`) raise ImportError, however deep in the import chain.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import serve_app

ROOT = Path(__file__).resolve().parents[2]

BLOCK_RAY_AND_IMPORT = """
import importlib, sys
sys.modules["ray"] = None
importlib.import_module(sys.argv[1])
"""


def core_modules() -> list[str]:
    names = [serve_app.__name__]
    for info in pkgutil.walk_packages(serve_app.__path__, prefix=f"{serve_app.__name__}."):
        names.append(info.name)
    return sorted(names)


def import_without_ray(module: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_RAY_AND_IMPORT, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_walk_finds_the_core_modules():
    modules = core_modules()
    assert "serve_app.settings" in modules
    assert "serve_app.llm.base" in modules
    assert "serve_app.storage.postgres" in modules


@pytest.mark.parametrize("module", core_modules())
def test_core_module_imports_without_ray(module):
    result = import_without_ray(module)
    assert result.returncode == 0, f"{module} needs ray:\n{result.stderr[-2000:]}"


def test_the_check_catches_a_module_that_imports_ray(tmp_path, monkeypatch):
    (tmp_path / "uses_ray.py").write_text("import ray\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = import_without_ray("uses_ray")
    assert result.returncode != 0
    assert "ray" in result.stderr
