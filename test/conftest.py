"""Shared fixtures: small real models, the TRI reference fixture, and CLI runners."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from source_checkout import map_training_subpackage

from rt_panoptic_ros.ros.dds_profile import use_shipped_profile
from rt_panoptic_ros.ros.testing.waiting import wait_for  # noqa: F401 (shared with the tests)

ROOT = Path(__file__).resolve().parents[1]

# Every test run gets its own DDS domain, so that parallel runs (CI, developers) never see
# each other's nodes; discovery stays on this machine (0.1 s instead of ~3 s).
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# The shipped Fast DDS profile (large shared-memory segment) for this process and the nodes,
# cameras and recorders it starts, as the node gives it to itself, unless one is set already:
# without it a burst of large reliable messages can wait up to a second for a heartbeat and
# best-effort ones do not arrive at all (benchmarks/dds.json). test_dds.py also starts processes
# without it.
use_shipped_profile()
#: TRI checkpoint layout, weight builder and the original implementation's outputs.
TRI_REFERENCE = ROOT / "test" / "data" / "tri_reference"


map_training_subpackage()


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


@contextlib.contextmanager
def small_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` (``options`` such as ``size=256k`` or ``ro,size=64k``) for
    the test's duration: a full or read-only disk. Skips, saying why, where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.decode().strip()
        pytest.skip(f"cannot mount a tmpfs ({options}) on this machine (needs root): {reason}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def run_cli(name: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run an installed console script (the venv's ``bin/``) as a user would.

    Where it is not installed (a source checkout on a machine without the venv), its entry
    point in setup.py is run by this Python instead, with the checkout on ``PYTHONPATH``.
    """
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        command = [str(exe)]
    else:
        entry = re.search(rf'"{re.escape(name)} = ([\w.]+):(\w+)"', (ROOT / "setup.py").read_text())
        assert entry is not None, f"{name}: not a console script of setup.py"
        module, function = entry.groups()
        script = f"import sys; from {module} import {function}; sys.exit({function}())"
        command = [sys.executable, "-c", script]
        env = dict(kwargs.pop("env", None) or os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        kwargs["env"] = env
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def random_batchnorm_stats(net, seed: int = 0):
    """Give every FrozenBatchNorm2d of ``net`` seeded non-trivial statistics, in place; returns ``net``.

    With the defaults (mean 0, var 1, weight 1, bias 0) a BN is the identity up to eps, so
    dropping it entirely would pass; these make each one a real per-channel affine map.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in net.modules():
            if isinstance(bn, FrozenBatchNorm2d):
                c = bn.weight.numel()
                bn.weight.copy_(0.5 + torch.rand(c, generator=g))
                bn.bias.copy_(0.2 * torch.randn(c, generator=g))
                bn.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                bn.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
    return net


@pytest.fixture(scope="session")
def rigged_file(tmp_path_factory) -> Path:
    """:func:`rigged_model` saved as a model file."""
    from rt_panoptic_ros.model import save_checkpoint

    return save_checkpoint(rigged_model(), tmp_path_factory.mktemp("rigged") / "rigged.pt")


def rigged_model(backbone: str = "resnet18"):
    """A tiny real network whose head biases make it "see" things everywhere.

    Random weights alone detect nothing; with these biases every P3 location proposes a
    32 x 32 box of the first thing class, the levelness picks P3, and road and that class
    share the semantic map, so the decoder has instances, stuff and void to produce.
    """
    import math

    from rt_panoptic_ros.model import RTPanoNet

    cfg = tiny_config(backbone)
    torch.manual_seed(0)  # the same network whichever tests ran before
    net = RTPanoNet(cfg).eval()
    head = net.head
    thing = cfg.dataset.thing_ids[0]
    with torch.no_grad():
        head.box_cls.bias.fill_(-10.0)
        head.box_cls.bias[0] = 10.0
        head.centerness.bias.fill_(5.0)
        head.box_reg.conv.weight.zero_()
        head.box_reg.conv.bias.fill_(math.log(16.0))
        head.levelness.conv.bias.fill_(-10.0)
        head.levelness.conv.bias[1] = 10.0
        head.semantic.conv.bias.fill_(-10.0)
        head.semantic.conv.bias[thing] = 3.0
        head.semantic.conv.bias[0] = 3.0
    return net


@pytest.fixture(scope="module")
def context():
    """An rclpy context of this test module's own (nodes in this process: cameras, recorders)."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture(scope="module")
def model_file(rigged_file) -> Path:
    """The rigged network's model file, for the node tests."""
    return rigged_file
