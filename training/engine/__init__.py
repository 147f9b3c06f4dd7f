"""The training engine: the loop, what runs around it, and the state it keeps on disk.

- ``trainer.py``: :class:`Trainer` (set-up, the step, the loop);
- ``hooks.py``: progress, periodic checkpoints and evaluation, TensorBoard (:class:`HookBase`);
- ``checkpoint.py``: the training state in ``OUT/last.pt`` and exact resumes (:class:`Checkpointer`);
- ``validation.py``: the scores a run logs, the model run as the Predictor runs it.
"""

from rt_panoptic_ros.training.engine.checkpoint import Checkpointer
from rt_panoptic_ros.training.engine.hooks import HookBase, StepReport
from rt_panoptic_ros.training.engine.trainer import Trainer, TrainingError

__all__ = ["Checkpointer", "HookBase", "StepReport", "Trainer", "TrainingError"]
