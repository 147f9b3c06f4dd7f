"""Where the bundled model is: the package share (colcon, pip) or the source tree."""

from __future__ import annotations

import sys
from pathlib import Path

from rt_panoptic_ros.errors import CheckpointError

PACKAGE = "rt_panoptic_ros"
#: File name of the small model shipped in ``models/`` (trained on the synthetic dataset).
BUNDLED_MODEL = "small_synthetic.pt"


def share_candidates(relative: str, module_file: Path = Path(__file__)) -> list[Path]:
    """Where a file installed into ``share/rt_panoptic_ros/<relative>`` may be, in order.

    The ament share directory (``ros2 run`` / ``ros2 launch`` after ``colcon build``),
    ``<prefix>/share`` of the running Python (``pip install``), ``<prefix>/share`` of the
    prefix this package is installed in (``<prefix>/lib/pythonX.Y/site-packages/rt_panoptic_ros``:
    colcon or ``pip --prefix`` without the environment set up), then the source tree
    (editable installs, tests). ``module_file``: a module of ``rt_panoptic_ros/ros/`` (another
    path in tests).
    """
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / relative)
        except (PackageNotFoundError, OSError, ValueError, KeyError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:  # no ament_index: not a ROS installation
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / relative)
    package = Path(module_file).resolve().parents[1]  # .../rt_panoptic_ros
    if len(package.parents) >= 4:
        candidates.append(package.parents[3] / "share" / PACKAGE / relative)
    candidates.append(package.parent / relative)
    return candidates


def bundled_model_path() -> Path:
    """The bundled model file (searched as :func:`share_candidates` says).

    Raises:
        CheckpointError: no bundled model is installed (pass ``model:=PATH``).
    """
    candidates = share_candidates(f"models/{BUNDLED_MODEL}")
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise CheckpointError(
        f"no bundled model ({BUNDLED_MODEL}) installed; looked in {looked}; pass model:=PATH"
    )
