"""Point the ROS wheels' CMake export files at this Python's include directories.

usage: <venv>/bin/python tools/fix_rosidl_cmake_paths.py <prefix>

The ``ros-kilted-*`` message wheels are built on a manylinux image, and their exported CMake
targets (``share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake``) name that
image's include directories::

    INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;
        /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"

CMake refuses to generate a build that links such a target when the directories do not
exist, so building any interface package that depends on ``std_msgs`` or ``geometry_msgs``
fails. This script rewrites those two paths to the running interpreter's own (run it with the
Python of the prefix being fixed, so that numpy is the one installed there). It rewrites only
paths under ``/opt/python/``, writes a file only when it changes, and so can run any number
of times.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

#: The manylinux image's numpy headers (numpy 2 keeps them in ``_core``, numpy 1 in ``core``).
NUMPY_INCLUDE = re.compile(r"/opt/python/[^;\"\s]*/site-packages/numpy/(?:_core|core)/include")
#: The manylinux image's Python headers, e.g. ``/opt/python/cp311-cp311/include/python3.11``.
PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")


def fix_file(path: Path, python_include: str, numpy_include: str) -> bool:
    """Rewrite one CMake file in place; returns whether it changed."""
    text = path.read_text()
    fixed = PYTHON_INCLUDE.sub(python_include, NUMPY_INCLUDE.sub(numpy_include, text))
    if fixed == text:
        return False
    path.write_text(fixed)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    prefix = Path(args[0])
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    # Fail here, with the reason, rather than with CMake's message about a missing directory.
    if not (Path(python_include) / "Python.h").is_file():
        print(f"error: no Python.h in {python_include}: install this Python's headers "
              f"(e.g. python3-dev) to build ROS interface packages", file=sys.stderr)  # fmt: skip
        return 1
    changed = [
        path
        for path in sorted((prefix / "share").glob("*/cmake/*.cmake"))
        if fix_file(path, python_include, numpy_include)
    ]
    left = [path for path in (prefix / "share").glob("*/cmake/*.cmake") if "/opt/python/" in path.read_text()]
    for path in left:
        print(f"error: {path} still names a path under /opt/python/ that this script does not know",
              file=sys.stderr)  # fmt: skip
    print(f"fix_rosidl_cmake_paths: {len(changed)} file(s) rewritten to {python_include} and {numpy_include}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
