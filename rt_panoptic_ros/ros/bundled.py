"""Where the bundled model is: the package share (colcon, pip) or the source tree."""

from __future__ import annotations

import sys
from pathlib import Path

from rt_panoptic_ros.errors import CheckpointError

PACKAGE = "rt_panoptic_ros"
#: File name of the small model shipped in ``models/`` (trained on the synthetic dataset).
BUNDLED_MODEL = "small_synthetic.pt"


def bundled_model_path() -> Path:
    """The bundled model file.

    Looked for in the ament share directory (``colcon build``), in ``<prefix>/share`` of the
    running Python (``pip install``), then in the source tree's ``models/`` (editable
    installs, tests).

    Raises:
        CheckpointError: no bundled model is installed (pass ``model:=PATH``).
    """
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / "models" / BUNDLED_MODEL)
        except (PackageNotFoundError, OSError, ValueError, KeyError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:  # no ament_index: not a ROS installation
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "models" / BUNDLED_MODEL)
    candidates.append(Path(__file__).resolve().parents[2] / "models" / BUNDLED_MODEL)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise CheckpointError(
        f"no bundled model ({BUNDLED_MODEL}) installed; looked in {looked}; pass model:=PATH"
    )
