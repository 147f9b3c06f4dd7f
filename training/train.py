"""``rt-panoptic-train``: train a model from a YAML config, on one CPU or under ``torchrun``.

::

    rt-panoptic-train --config config/training/synthetic.yaml --output-dir runs/synthetic \
        [--resume] [--max-steps N] [solver.lr=0.01 data.root=/data/synth ...]
    torchrun --nproc-per-node 2 -m rt_panoptic_ros.training.train --config ...   # DDP

Every checkpoint it writes (``OUT/last.pt``, ``OUT/model_final.pt``) loads with
:func:`rt_panoptic_ros.load_model`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from rt_panoptic_ros.cli_support import make_parser, run_cli
from rt_panoptic_ros.interrupts import sigterm_as_interrupt
from rt_panoptic_ros.training.train_config import load_config

PROG = "rt-panoptic-train"


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(PROG, "Train a real-time panoptic network (Hou et al., CVPR 2020).")
    parser.add_argument("--config", required=True, help="training YAML (config/training/*.yaml)")
    parser.add_argument("--output-dir", default="runs/train", help="checkpoints, TensorBoard events")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this step")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        from rt_panoptic_ros.devices import resolve_device
        from rt_panoptic_ros.training.engine import Trainer

        cfg = load_config(args.config, args.overrides)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda":
            device = f"cuda:{local_rank}"
        device = resolve_device(device, "--device")  # one line, not torch's traceback, if absent
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if args.max_steps is not None and args.max_steps < 1:
            parser.error("--max-steps must be >= 1")
        trainer = Trainer(cfg, args.output_dir, device=device, max_steps=args.max_steps)
        main_process = trainer.dist.main
        if args.resume:
            trainer.resume()
        if main_process:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            print(f"{PROG}: {trainer.init_note}; {trainer.dist.world} process(es), "
                  f"{trainer.batch_per_process} image(s) per step each, from step {trainer.step}",
                  file=sys.stderr)  # fmt: skip
        report = trainer.train()
        if main_process:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in report.items())
            print(f"{PROG}: step {trainer.step}: {shown}; wrote {Path(args.output_dir) / 'model_final.pt'}")
        return 0

    try:
        # `kill` (a scheduler's, or torchrun's on a failed peer) stops like Ctrl-C: loaders and
        # their worker processes shut down instead of lingering.
        with sigterm_as_interrupt():
            return run_cli(PROG, body)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
