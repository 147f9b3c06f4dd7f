"""DESIGN.md's dependency direction, checked with import-linter contracts (pyproject.toml).

The contracts name ``rt_panoptic_ros.training``, which only exists as such once installed
(setup.py maps ``training/`` into the package). The checker therefore runs on a copy of the
source laid out as an installation lays it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(tmp_path: Path) -> Path:
    """Copy ``rt_panoptic_ros/`` and ``training/`` into ``tmp_path`` as installed."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "rt_panoptic_ros", tmp_path / "rt_panoptic_ros", ignore=ignore)
    shutil.copytree(ROOT / "training", tmp_path / "rt_panoptic_ros" / "training", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(lint), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_import_contracts_hold(tmp_path):
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_contracts_can_fail(tmp_path):
    """A decoder module that imports the model breaks a contract, and the checker says so."""
    tree = installed_layout(tmp_path)
    (tree / "rt_panoptic_ros" / "panoptic" / "bad.py").write_text("import rt_panoptic_ros.model\n")
    (tree / "rt_panoptic_ros" / "model" / "bad.py").write_text("import rt_panoptic_ros.training\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "rt_panoptic_ros.panoptic.bad -> rt_panoptic_ros.model" in result.stdout
    assert "rt_panoptic_ros.model.bad -> rt_panoptic_ros.training" in result.stdout
