"""Shared fixtures: small real models, the TRI reference fixture, and CLI runners."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: TRI checkpoint layout, weight builder and the original implementation's outputs.
TRI_REFERENCE = ROOT / "test" / "data" / "tri_reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def tiny_config(backbone: str = "resnet18"):
    """A real but narrow network, fast on a CPU."""
    from rt_panoptic_ros.config import preset

    cfg = preset("small_cityscapes")
    model = dataclasses.replace(
        cfg.model, backbone=backbone, fpn_channels=32, semantic_channels=16,
        localization_channels=32, tower_convs=1,
    )  # fmt: skip
    return dataclasses.replace(cfg, model=model)


@pytest.fixture(scope="session")
def tri_weights(tmp_path_factory) -> Path:
    """The TRI-layout state dict that ``make_weights.py 1`` builds (seeded, exact)."""
    out = tmp_path_factory.mktemp("tri") / "tri_seed1.pth"
    subprocess.run([sys.executable, str(TRI_REFERENCE / "make_weights.py"), "1", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def tri_model_file(tri_weights, tmp_path_factory) -> Path:
    """``tri_weights`` converted by the real CLI into our model file."""
    out = tmp_path_factory.mktemp("tri_converted") / "tri_seed1.pt"
    result = run_cli("rt-panoptic-convert", "--from", "tri", str(tri_weights), str(out))
    assert result.returncode == 0, result.stderr
    return out


def run_cli(name: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run an installed console script (the venv's ``bin/``) as a user would."""
    exe = Path(sys.executable).with_name(name)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, **kwargs)
