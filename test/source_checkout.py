"""``rt_panoptic_ros.training`` in a source checkout that was never installed.

setup.py maps the top-level ``training/`` folder to ``rt_panoptic_ros.training``
(``package_dir``). A GPU box without the venv runs the tests and ``benchmarks/gpu_check.py``
from the repository root instead; there this import does the same mapping. An installed
package is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def map_training_subpackage() -> None:
    """Import ``rt_panoptic_ros.training`` from ``training/`` unless it is importable already."""
    if importlib.util.find_spec("rt_panoptic_ros") is None:
        return
    if importlib.util.find_spec("rt_panoptic_ros.training") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "rt_panoptic_ros.training", ROOT / "training" / "__init__.py",
        submodule_search_locations=[str(ROOT / "training")],
    )  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rt_panoptic_ros.training"] = module
    spec.loader.exec_module(module)
