"""Console entry points (``rt-panoptic-*``): argument parsing and error reporting only.

Each ``*_main(argv=None)`` parses its arguments, calls plain functions of the package and
returns an exit status. Every error a user can cause is printed as one line
(``rt-panoptic-convert: error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--model",
        required=True,
        help="model file (.pt), ONNX file of any precision (rt-panoptic-export; --backend onnxruntime "
        "or tensorrt) or TensorRT engine (--backend tensorrt)",
    )
    parser.add_argument("--output", required=True, help="folder to write the predictions into")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--backend", default="torch", help="torch, onnxruntime, tensorrt or auto (default: torch)"
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the predictions of an existing, non-empty --output")  # fmt: skip
    tracking_arguments(parser, enabled=False)
    args = parser.parse_args(argv)

    def body() -> int:
        from tqdm import tqdm

        from rt_panoptic_ros.infer import list_images, prepare_output, run_inference
        from rt_panoptic_ros.runtime.predictor import Predictor

        images = list_images(args.source)
        tracking(args)  # a bad value costs no model loading
        prepare_output(args.output, args.overwrite)
        predictor = Predictor(args.model, device=args.device, backend=args.backend)
        with tqdm(total=len(images), unit="img", desc="infer", dynamic_ncols=True) as bar:

            def progress(latency_ms: float) -> None:
                bar.set_postfix(latency=f"{latency_ms:.0f}ms")
                bar.update(1)

            def on_error(message: str) -> None:
                bar.write(f"{parser.prog}: error: {message}", file=sys.stderr)
                bar.update(1)

            report = run_inference(predictor, images, args.output, progress, on_error, tracking(args))
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


def log_to_stderr(prog: str) -> None:
    """Show the runtime's INFO log lines (cache hits, rebuilds, progress) as ``prog: ...`` lines."""
    import logging

    logger = logging.getLogger("rt_panoptic_ros")
    for old in [h for h in logger.handlers if getattr(h, "rt_panoptic_cli", False)]:
        logger.removeHandler(old)  # one handler, even when a main runs twice in one process
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    handler.rt_panoptic_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _size_arguments(parser, batch: bool = True) -> None:
    for side in ("height", "width"):
        parser.add_argument(
            f"--{side}",
            type=int,
            default=None,
            help=f"network input {side}, a multiple of 128 (default: the model's input.{side})",
        )
    if batch:
        parser.add_argument("--batch", type=int, default=1, help="images per call")


def export_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-export MODEL --output X.onnx [--precision fp32|fp16|int8] [--calibration-dir DIR]``."""
    parser = make_parser(
        "rt-panoptic-export",
        "Export a model file to ONNX: input 'image' uint8 [N,3,H,W] RGB, the head's 17 outputs by "
        "name (float32); checked with onnx.checker, shape inference and TensorRT's list of ONNX ops. "
        "The precision is written into the graph (TensorRT 10 and 11 build it strongly typed).",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.pt)")
    parser.add_argument("--output", required=True, help="ONNX file to write")
    _size_arguments(parser)
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="symbolic batch, height and width (--height/--width: the traced size)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp16: float16 with normalisation and the output tails in float32; int8: explicit "
        "Q/DQ around every convolution, calibrated on --calibration-dir (default: fp32)",
    )
    parser.add_argument(
        "--calibration-dir",
        default=None,
        metavar="DIR",
        help="int8: a folder of images like the robot's camera sees (a few dozen to a few hundred)",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        from rt_panoptic_ros.errors import ConfigError
        from rt_panoptic_ros.model import load_model
        from rt_panoptic_ros.runtime.export import export_onnx
        from rt_panoptic_ros.runtime.files import file_sha256
        from rt_panoptic_ros.runtime.sources import DYNAMIC_TRACE_SIZE

        model = load_model(args.model)
        height = args.height or model.cfg.input.height or (DYNAMIC_TRACE_SIZE[0] if args.dynamic else 0)
        width = args.width or model.cfg.input.width or (DYNAMIC_TRACE_SIZE[1] if args.dynamic else 0)
        if not (height and width):
            raise ConfigError(
                "--height / --width: needed, the model file has no input size (input.height/width)"
            )
        report = export_onnx(
            model, args.output, height, width, batch=args.batch, dynamic=args.dynamic,
            source_sha256=file_sha256(args.model), progress=lambda line: print(line, file=sys.stderr),
            precision=args.precision, calibration_dir=args.calibration_dir,
        )  # fmt: skip
        print(report.summary())
        return 0

    return run_cli(parser.prog, body)


def build_engine_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-build-engine MODEL [--precision fp16|fp32|int8] [--calibration-dir DIR]``."""
    parser = make_parser(
        "rt-panoptic-build-engine",
        "Build (or find up to date) the TensorRT engine of a model in its cache beside the model "
        "file, as the tensorrt backend would at start-up; a key mismatch or a corrupt file rebuilds it. "
        "Engines are strongly typed (TensorRT 10.3+ / 11.x): their precision is the ONNX graph's.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.pt) or ONNX file (rt-panoptic-export)")
    parser.add_argument(
        "--precision",
        choices=["fp16", "fp32", "int8"],
        default=None,
        help="the ONNX graph's precision, which the engine keeps. A .pt is exported in it once and "
        "cached (none: fp16; int8: Q/DQ calibrated on --calibration-dir); an .onnx file keeps its "
        "own, and a precision that differs from it is an error (none: the file's)",
    )
    parser.add_argument(
        "--calibration-dir",
        "--calib",
        dest="calibration_dir",
        default=None,
        metavar="DIR",
        help="int8 from a .pt: a folder of images like the robot's camera sees",
    )
    _size_arguments(parser)
    parser.add_argument("--device", default="cuda", help="CUDA device to build for")
    parser.add_argument(
        "--cache-dir", default=None, help="cache folder (default: <model>.cache beside the model)"
    )
    args = parser.parse_args(argv)

    def body() -> int:
        from rt_panoptic_ros.runtime.predictor import Predictor

        log_to_stderr(parser.prog)
        size = (args.height, args.width) if args.height and args.width else None
        predictor = Predictor(
            args.model, device=args.device, backend="tensorrt", precision=args.precision, input_size=size,
            batch_size=args.batch, cache_dir=args.cache_dir, calibration_dir=args.calibration_dir,
        )  # fmt: skip
        backend = predictor.backend
        print(f"engine {backend.where}: {backend.precision}, input {'x'.join(map(str, backend.input_shape))}")
        return 0

    return run_cli(parser.prog, body)


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-bench --model M --backend B --height H --width W``: per-stage latency as JSON."""
    from rt_panoptic_ros.runtime.backends import BACKENDS  # torch: only once a command needs it

    parser = make_parser(
        "rt-panoptic-bench",
        "Per-stage latency (upload, network, decode, download; median and p90) and end-to-end FPS "
        "of the Predictor, for each model on each backend, side by side; JSON with the command "
        "and the machine.",
    )
    parser.add_argument(
        "--model", nargs="+", required=True, help="model file(s), or preset name(s) run with random weights"
    )
    parser.add_argument("--backend", nargs="+", default=["torch"],
                        choices=BACKENDS, help="backend(s)")  # fmt: skip
    parser.add_argument("--height", type=int, default=512, help="input height (multiple of 128)")
    parser.add_argument("--width", type=int, default=1024, help="input width (multiple of 128)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default=None,
        help="default: the backend's own (torch: fp16 on CUDA, fp32 on CPU; onnxruntime and tensorrt: "
        "an ONNX file's own, for a .pt fp32 / fp16). To compare int8 with fp32, give both exported "
        "files to --model (rt-panoptic-export --precision int8)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: each backend's own)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    parser.add_argument("--cuda-graph", action="store_true", help="torch on CUDA: replay a CUDA graph")
    parser.add_argument("--output", default=None, help="JSON file to write (default: stdout)")
    args = parser.parse_args(argv)

    def body() -> int:
        import json
        import shlex
        from pathlib import Path

        from rt_panoptic_ros.runtime.bench import run_benchmark

        log_to_stderr(parser.prog)
        report = run_benchmark(
            args.model, args.backend, args.height, args.width, args.precision, args.frames, args.warmup,
            args.device, args.cuda_graph, progress=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
        command = shlex.join([parser.prog, *(sys.argv[1:] if argv is None else argv)])
        text = json.dumps({"command": command, **report}, indent=2) + "\n"
        if args.output:
            Path(args.output).write_text(text)
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0

    return run_cli(parser.prog, body)


def bag_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-bag``: one bag (``IN OUT``) or many (``BAG... --output-dir DIR [--ray]``).

    The bag tool's command line lives with the bag tool (:mod:`rt_panoptic_ros.ros.bag.cli`).
    """
    from rt_panoptic_ros.ros.bag.cli import bag_main as main

    return main(argv)


def tracking_arguments(parser: argparse.ArgumentParser, enabled: bool) -> None:
    """``--track`` (or, where tracking is on by default, ``--no-track``), ``--max-age``,
    ``--iou-threshold``: the node's ``tracking.*`` parameters as options."""
    from rt_panoptic_ros.tracking import DEFAULT_TRACKING

    group = parser.add_argument_group("tracking (stable instance ids across frames, docs/tracking.md)")
    if enabled:
        group.add_argument("--no-track", dest="track", action="store_false",
                           help="number each frame's instances 1..K afresh instead")  # fmt: skip
    else:
        group.add_argument(
            "--track", action="store_true", help="the images are one video's frames in name order: track them"
        )
    group.add_argument("--max-age", type=int, default=DEFAULT_TRACKING.max_age, metavar="N",
                       help="frames an unseen object keeps its id")  # fmt: skip
    group.add_argument("--iou-threshold", type=float, default=DEFAULT_TRACKING.iou_threshold, metavar="T",
                       help="least overlap with a track to continue it, in (0, 1]")  # fmt: skip


def tracking(args: argparse.Namespace):
    """The :class:`~rt_panoptic_ros.tracking.TrackingSettings` of :func:`tracking_arguments`'
    options, or ``None`` when tracking is off.

    Raises:
        InputError: ``--max-age`` or ``--iou-threshold`` out of range (one line).
    """
    from rt_panoptic_ros.errors import InputError
    from rt_panoptic_ros.tracking import TrackingSettings

    if not args.track:
        return None
    try:
        return TrackingSettings(max_age=args.max_age, iou_threshold=args.iou_threshold)
    except ValueError as error:
        raise InputError(f"--max-age / --iou-threshold: {error}") from None
