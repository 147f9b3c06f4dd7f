"""Console entry points (``rt-panoptic-*``): argument parsing and error reporting only.

Each ``*_main(argv=None)`` parses its arguments, calls plain functions of the package and
returns an exit status. Every error a user can cause is printed as one line
(``rt-panoptic-convert: error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Shared with the training tools, which may not import this module (pyproject.toml contracts).
from rt_panoptic_ros.cli_support import EXIT_ERROR, EXIT_INTERRUPTED, make_parser, run_cli

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "convert_main", "make_parser", "run_cli"]


def convert_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-convert --from tri IN.pth OUT.pt``: the public TRI model -> our model file."""
    parser = make_parser(
        "rt-panoptic-convert",
        "Convert a checkpoint of the original implementation (TRI-ML/realtime_panoptic) into "
        "a self-describing rt_panoptic_ros model file.",
    )
    parser.add_argument("--from", dest="source_format", choices=["tri"], required=True,
                        help="format of the input checkpoint")  # fmt: skip
    parser.add_argument("input", help="checkpoint to convert (e.g. cvpr_realtime_pano_cityscapes_"
                        "standalone_no_prefix.pth)")  # fmt: skip
    parser.add_argument("output", help="model file to write (.pt)")
    parser.add_argument("--preset", default="tri_cityscapes",
                        help="architecture and dataset the weights are for")  # fmt: skip
    parser.add_argument("--config", default=None,
                        help="YAML config instead of --preset (other TRI models, e.g. COCO)")  # fmt: skip
    args = parser.parse_args(argv)

    def body() -> int:
        from rt_panoptic_ros.config import load_yaml, preset
        from rt_panoptic_ros.model.tri_checkpoint import convert_tri_checkpoint

        cfg = load_yaml(args.config) if args.config else preset(args.preset)
        print(f"converting {args.input} ({args.source_format}) ...", file=sys.stderr)
        model = convert_tri_checkpoint(args.input, args.output, cfg)
        params = sum(p.numel() for p in model.parameters())
        print(f"wrote {args.output}: {cfg.model.backbone}, {cfg.dataset.num_classes} classes, "
              f"{params / 1e6:.1f} M parameters")  # fmt: skip
        return 0

    return run_cli(parser.prog, body)


def infer_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-infer --model M IMAGE_OR_DIR --output DIR``: a COCO panoptic predictions folder."""
    parser = make_parser(
        "rt-panoptic-infer",
        "Panoptic segmentation of an image or a folder of images, written as a COCO panoptic "
        "predictions folder (panoptic/<stem>.png, panoptic.json) plus overlay/<stem>.png.",
    )
    parser.add_argument("source", metavar="IMAGE_OR_DIR", help="an image file or a folder of images")
    parser.add_argument("--model", required=True, help="model file (.pt)")
    parser.add_argument("--output", required=True, help="folder to write the predictions into")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--backend", default="torch", help="inference backend")
    args = parser.parse_args(argv)

    def body() -> int:
        from tqdm import tqdm

        from rt_panoptic_ros.infer import list_images, run_inference
        from rt_panoptic_ros.runtime.predictor import Predictor

        images = list_images(args.source)
        predictor = Predictor(args.model, device=args.device, backend=args.backend)
        with tqdm(total=len(images), unit="img", desc="infer", dynamic_ncols=True) as bar:

            def progress(latency_ms: float) -> None:
                bar.set_postfix(latency=f"{latency_ms:.0f}ms")
                bar.update(1)

            def on_error(message: str) -> None:
                bar.write(f"{parser.prog}: error: {message}", file=sys.stderr)
                bar.update(1)

            report = run_inference(predictor, images, args.output, progress, on_error)
        if report.latencies_ms:
            mean = sum(report.latencies_ms) / len(report.latencies_ms)
            print(f"wrote {len(report.written)} image(s) to {args.output} (mean latency {mean:.0f} ms)",
                  file=sys.stderr)  # fmt: skip
        if report.failed:
            print(f"{parser.prog}: error: {len(report.failed)} of {len(images)} image(s) failed",
                  file=sys.stderr)  # fmt: skip
            return EXIT_ERROR
        return 0

    return run_cli(parser.prog, body)
