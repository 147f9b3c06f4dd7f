"""ament_python set-up of rt_panoptic_ros (``pip install .``, ``pip install -e .``, ``colcon build``).

The top-level ``training/`` folder is installed as the subpackage ``rt_panoptic_ros.training``
through ``package_dir`` (DESIGN.md), so the node's package and the training code ship as one
distribution while staying apart in the source tree.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "rt_panoptic_ros"

TRAINING_PACKAGES = [f"{PACKAGE}.training"] + [
    f"{PACKAGE}.training.{name}" for name in find_packages("training")
]

CONSOLE_SCRIPTS = [
    "rt-panoptic-convert = rt_panoptic_ros.cli:convert_main",
    "rt-panoptic-infer = rt_panoptic_ros.cli:infer_main",
    "rt-panoptic-export = rt_panoptic_ros.cli:export_main",
    "rt-panoptic-build-engine = rt_panoptic_ros.cli:build_engine_main",
    "rt-panoptic-bench = rt_panoptic_ros.cli:bench_main",
    "rt-panoptic-bag = rt_panoptic_ros.cli:bag_main",
    "panoptic_node = rt_panoptic_ros.ros.node:main",
    "panoptic_lifecycle_node = rt_panoptic_ros.ros.lifecycle_node:main",
    "rt-panoptic-demo = rt_panoptic_ros.ros.testing.demo:main",
    "rt-panoptic-eval = rt_panoptic_ros.training.evaluate:main",
    "rt-panoptic-synth = rt_panoptic_ros.training.synth:main",
    "rt-panoptic-train = rt_panoptic_ros.training.train:main",
    "rt-panoptic-slim-checkpoint = rt_panoptic_ros.training.slim_checkpoint:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time panoptic segmentation for ROS 2 (Hou et al., CVPR 2020)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]) + TRAINING_PACKAGES,
    package_dir={f"{PACKAGE}.training": "training"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/training", glob("config/training/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.md")),
    ],
    # Run-time Python dependencies are pinned in requirements.txt (pip) and declared in
    # package.xml (rosdep); setuptools must not try to resolve torch on its own.
    install_requires=["setuptools"],
    # Optional: rt-panoptic-bag --ray runs a fleet's bags on a Ray cluster (docs/bags.md).
    # `make setup` installs it too (requirements.txt), so its tests run in CI.
    extras_require={"fleet": ["ray==2.60.0"]},
    zip_safe=False,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
