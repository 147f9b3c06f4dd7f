"""``colcon build`` of the package, as on a robot, and the installed executable running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, rigged_model

from rt_panoptic_ros.model import save_checkpoint

VENV = Path(sys.prefix)
PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"


def tracked_tree(destination: Path) -> Path:
    """The package as a clean clone has it (the files git tracks), as a colcon workspace source."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    source = destination / "src" / "rt_panoptic_ros"
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return source


@pytest.mark.slow
def test_colcon_build_installs_a_runnable_node(tmp_path):
    workspace = tmp_path / "ws"
    tracked_tree(workspace)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}
    colcon = Path(sys.executable).with_name("colcon")
    build = subprocess.run(
        [str(colcon), "--log-base", "log", "build", "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--merge-install"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    install = workspace / "install"
    assert "Finished <<< rt_panoptic_ros" in build.stdout
    # Where `ros2 run` and `ros2 launch` look (ament_python), and the package index entry.
    executable = install / "lib" / "rt_panoptic_ros" / "panoptic_node"
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = install / "share" / "rt_panoptic_ros"
    for name in ("package.xml", "launch/panoptic.launch.py", "config/demo_cpu.yaml", "models/README.md"):
        assert (share / name).is_file(), name
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "rt_panoptic_ros").is_file()
    site = install / "lib" / PYTHON_DIR / "site-packages"
    assert (site / "rt_panoptic_ros" / "training" / "__init__.py").is_file(), (
        "training/ is installed as a subpackage"
    )

    # The installed executable runs from the install space (not this source tree).
    run_env = {**env, "AMENT_PREFIX_PATH": f"{install}:{VENV}", "PYTHONPATH": str(site)}
    model = save_checkpoint(rigged_model(), tmp_path / "model.pt")
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        arguments = ["--ros-args", "-p", f"model:={model}", "-p", "backend:=torch", "-r", "__ns:=/colcon"]
        process = subprocess.Popen(
            [str(executable), *arguments], cwd=tmp_path, env=run_env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and "ready:" not in log.read_text() and process.poll() is None:
                time.sleep(0.2)
            assert "ready:" in log.read_text(), log.read_text()
            assert "/colcon/image" in log.read_text()
        finally:
            process.send_signal(2)
            process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()
    probe = subprocess.run(
        [sys.executable, "-c", "import rt_panoptic_ros.ros.node as n; print(n.__file__)"],
        cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(install)), probe.stdout + probe.stderr
