"""Training code for rt_panoptic_ros (imported as ``rt_panoptic_ros.training``).

Data (``data/``), targets, losses, the trainer and the evaluator live here. Nothing in the
inference package imports this subpackage; it depends on ``rt_panoptic_ros.{model, panoptic,
config}`` only (checked by the import-linter contracts in ``pyproject.toml``).
"""
