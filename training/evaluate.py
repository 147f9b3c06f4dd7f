"""``rt-panoptic-eval``: score panoptic predictions on disk (the command only; the scoring is
:mod:`rt_panoptic_ros.training.evaluation.files`).

    rt-panoptic-eval --gt-json gtFine/cityscapes_panoptic_val_trainId.json \\
        --gt-dir gtFine/cityscapes_panoptic_val_trainId --pred-json out/panoptic.json \\
        --pred-dir out/panoptic --output results.json

With ``--video`` also STQ, AQ, SQ, id switches and id consistency over the ground truth's
videos (its images carry ``video_id`` and ``frame_index``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rt_panoptic_ros.atomic_files import atomic_write
from rt_panoptic_ros.cli_support import make_parser, run_cli
from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.training.evaluation.evaluator import format_table
from rt_panoptic_ros.training.evaluation.files import evaluate_files, single_threaded_opencv
from rt_panoptic_ros.training.evaluation.video_quality import format_video_table


def main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-eval --gt-json F --gt-dir D --pred-json F --pred-dir D [--output F] [--video]``."""
    parser = make_parser(
        "rt-panoptic-eval",
        "Panoptic quality (PQ, SQ, RQ for all, things, stuff and per class; panopticapi's "
        "pq_compute semantics) and semantic mIoU of predictions in the COCO panoptic format. "
        "With --video also STQ, AQ and SQ (Weber et al., STEP, 2021), id switches and id "
        "consistency over the videos of the ground truth.",
    )
    parser.add_argument("--gt-json", required=True, help="ground-truth JSON (with 'categories')")
    parser.add_argument("--gt-dir", required=True, help="folder of the ground-truth PNGs")
    parser.add_argument("--pred-json", required=True, help="prediction JSON (one annotation per image)")
    parser.add_argument("--pred-dir", required=True, help="folder of the prediction PNGs")
    parser.add_argument("--output", help="write the results as JSON (panopticapi's structure) here")
    parser.add_argument("--workers", type=int, default=0, help="processes; 0 = one per CPU core")
    parser.add_argument(
        "--video",
        action="store_true",
        help="score videos: the ground truth's images carry video_id and frame_index, and a "
        "predicted segment id is one track throughout its video",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        single_threaded_opencv()  # this process is ours: it decodes PNGs too when --workers 1
        if args.workers < 0:
            raise DatasetError(f"--workers: {args.workers}, expected 0 (one per core) or more")
        results, categories = evaluate_files(
            args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, workers=args.workers, video=args.video
        )
        print(format_table(results, categories))
        if args.video:
            print(format_video_table(results["STQ"]))
        if args.output:
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(results, indent=2) + "\n"
            atomic_write(output, lambda f: f.write(text.encode()))
            print(f"wrote {output}", file=sys.stderr)
        return 0

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
