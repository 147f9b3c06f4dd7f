"""``rt-panoptic-synth``: write a synthetic street-scene dataset, still images or videos, in the
COCO panoptic format (the command only; the scenes are ``data/synthetic.py``, the videos
``data/synthetic_video.py``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rt_panoptic_ros.cli_support import make_parser, run_cli
from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.training.data.synthetic import DEFAULT_HEIGHT, DEFAULT_WIDTH, write_dataset
from rt_panoptic_ros.training.data.synthetic_video import write_video_dataset

#: Largest image side rt-panoptic-synth draws (the node's largest input side too): a scene is
#: drawn in memory in several full-size layers, so memory grows with height x width.
MAX_SIDE = 8192


def main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-synth OUT (--num N | --video --sequences S --frames F) [--seed N --height H --width W]``.

    The still images and the videos share the options after the parenthesis.
    """
    parser = make_parser(
        "rt-panoptic-synth",
        "Write a synthetic street-scene dataset in the COCO panoptic format: OUT/images/*.png, "
        "OUT/panoptic/*.png and OUT/panoptic.json (image ids are the file stems). With --video: "
        "videos whose things move, cross, occlude each other, leave the view and come back, each "
        "segment keeping its id across the frames of its video (images carry video_id and frame_index).",
    )
    parser.add_argument("out", help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--num", type=int, help="number of images (required without --video)")
    parser.add_argument("--video", action="store_true", help="write videos instead of still images")
    parser.add_argument("--sequences", type=int, help="with --video: number of videos")
    parser.add_argument("--frames", type=int, help="with --video: frames per video")
    parser.add_argument(
        "--seed", type=int, default=0, help="image (or video) i is a function of (seed, i) only"
    )
    parser.add_argument(
        "--height", type=int, default=DEFAULT_HEIGHT, help=f"image height, 32 to {MAX_SIDE} pixels"
    )
    parser.add_argument(
        "--width", type=int, default=DEFAULT_WIDTH, help=f"image width, 32 to {MAX_SIDE} pixels"
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace images/, panoptic/ and panoptic.json of an existing OUT")  # fmt: skip
    args = parser.parse_args(argv)

    def body() -> int:
        out = Path(args.out)
        _check_counts(args)
        if args.seed < 0:
            raise DatasetError(f"--seed: {args.seed}, expected a non-negative integer")
        if not (32 <= args.height <= MAX_SIDE and 32 <= args.width <= MAX_SIDE):
            raise DatasetError(
                f"--height/--width: {args.height}x{args.width}, expected 32 to {MAX_SIDE} pixels each"
            )
        if out.exists() and not out.is_dir():
            raise DatasetError(f"{out}: exists and is not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not args.overwrite:
                raise DatasetError(f"{out}: folder is not empty (use --overwrite to replace a dataset)")
            for old in ("images", "panoptic"):
                shutil.rmtree(out / old, ignore_errors=True)
            (out / "panoptic.json").unlink(missing_ok=True)
        size = f"{args.height}x{args.width}, seed {args.seed}"
        if args.video:
            path = write_video_dataset(out, args.sequences, args.frames, args.seed, args.height, args.width)
            what = f"{args.sequences} videos of {args.frames} frames"
        else:
            path = write_dataset(out, args.num, args.seed, args.height, args.width)
            what = f"{args.num} images"
        print(f"wrote {what} ({size}) and {path}", file=sys.stderr)
        return 0

    return run_cli(parser.prog, body)


def _check_counts(args: argparse.Namespace) -> None:
    """``--num`` for still images, ``--sequences`` and ``--frames`` for videos, each at least 1."""
    if args.video:
        if args.num is not None:
            raise DatasetError("--num: not used with --video (give --sequences and --frames)")
        counts = {"--sequences": (args.sequences, "video"), "--frames": (args.frames, "frame")}
    else:
        for option, value in (("--sequences", args.sequences), ("--frames", args.frames)):
            if value is not None:
                raise DatasetError(f"{option}: only used with --video")
        counts = {"--num": (args.num, "image")}
    for option, (value, unit) in counts.items():
        if value is None:
            raise DatasetError(f"{option}: required{' with --video' if args.video else ''}")
        if value < 1:
            raise DatasetError(f"{option}: {value}, expected at least 1 {unit}")


if __name__ == "__main__":
    sys.exit(main())
