"""``rt-panoptic-bag``: one bag (``IN OUT``), or many (``BAG... --output-dir DIR``), optionally on Ray.

Parsing and dispatch only: the one-bag pipeline is :mod:`~rt_panoptic_ros.ros.bag.processing`,
the many-bag run :mod:`~rt_panoptic_ros.ros.bag.fleet` (manifest, restart, progress, summary)
with :mod:`~rt_panoptic_ros.ros.bag.worker` in this process or
:mod:`~rt_panoptic_ros.ros.bag.ray_runner` on a Ray cluster. The per-bag options are built
once (:func:`bag_options`) and serve both forms, so a new option of ``BagJob`` is added there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rt_panoptic_ros.cli import log_to_stderr, tracking, tracking_arguments
from rt_panoptic_ros.cli_support import EXIT_INTERRUPTED, make_parser, run_cli
from rt_panoptic_ros.errors import CheckpointError
from rt_panoptic_ros.runtime.backends import BACKENDS

PROG = "rt-panoptic-bag"
#: The options only a many-bag run takes.
_FLEET_OPTIONS = ("ray", "workers", "workers_per_gpu", "threads_per_worker", "max_attempts")
RAY_HINT = "pip install 'rt_panoptic_ros[fleet]' (or pip install ray==2.60.0)"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "Segment every frame of an image topic of a rosbag2 (sqlite3 or mcap) and write the node's "
        "outputs (panoptic/semantic, panoptic/instance, panoptic/detections, and with --overlay "
        "panoptic/overlay, in the image topic's namespace) to a new bag in the same storage format, "
        "each with the input's header and bag time. One bag: IN OUT. Many: BAG... --output-dir DIR "
        "writes DIR/<bag name> for each, restartably (DIR/manifest.json, DIR/summary.json), in this "
        "process or with --ray on a Ray cluster.",
    )
    parser.add_argument(
        "bags", nargs="+", metavar="BAG",
        help="IN OUT: input bag (a folder, or a .db3 / .mcap file) and output bag folder to create; "
        "with --output-dir: the input bags",
    )  # fmt: skip
    parser.add_argument(
        "--image-topic", required=True, metavar="T", help="sensor_msgs/Image or CompressedImage topic"
    )
    parser.add_argument(
        "--model", default=None, help="model file (.pt, .onnx, .engine); none: the bundled model"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="inference backend",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; none: the backend's own")
    parser.add_argument("--overlay", action="store_true", help="also write panoptic/overlay (rgb8)")
    parser.add_argument("--overlay-alpha", type=float, default=0.5, help="weight of the overlay's colours")
    parser.add_argument(
        "--start", type=float, default=0.0, metavar="S", help="seconds after the bag's first message"
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="D", help="seconds to process; none: to the end"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT if it is an existing bag; with --output-dir: redo every bag, whatever the "
        "manifest says",
    )  # fmt: skip
    tracking_arguments(parser, enabled=True)
    fleet = parser.add_argument_group("many bags (docs/bags.md, 'A fleet's bags')")
    fleet.add_argument(
        "--output-dir", default=None, metavar="DIR",
        help="write DIR/<input bag name> for each BAG; a re-run skips the done ones and redoes the rest",
    )  # fmt: skip
    fleet.add_argument(
        "--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
        help="run on Ray: a local cluster (no ADDRESS, or 'local'), 'auto' (the cluster this machine "
        "belongs to, `ray start`), host:port or ray://host:port; needs " + RAY_HINT,
    )  # fmt: skip
    fleet.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="Ray workers (one Predictor each); none: GPUs x --workers-per-gpu, or without GPUs "
        "CPUs / --threads-per-worker",
    )  # fmt: skip
    fleet.add_argument("--workers-per-gpu", type=int, default=1, metavar="N",
                       help="Ray workers sharing each GPU")  # fmt: skip
    fleet.add_argument(
        "--threads-per-worker", type=int, default=None, metavar="N",
        help="torch CPU threads of each worker (Ray: also the CPUs it reserves); none: Ray GPU workers 2, "
        "CPU workers CPUs / --workers, or without --workers CPUs / 4 (1 to 4); in this process torch's own",
    )  # fmt: skip
    fleet.add_argument("--max-attempts", type=int, default=3, metavar="N",
                       help="tries of a bag whose worker dies mid-bag (killed, out of memory)")  # fmt: skip
    return parser


def bag_main(argv: Sequence[str] | None = None) -> int:
    """``rt-panoptic-bag IN OUT --image-topic T`` or ``BAG... --output-dir DIR [--ray [ADDRESS]]``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir is None:
        if len(args.bags) != 2:
            parser.error("give IN OUT (one bag), or BAG... --output-dir DIR (many bags)")
        given = [f"--{name.replace('_', '-')}" for name in _FLEET_OPTIONS if _given(parser, args, name)]
        if given:
            parser.error(f"{', '.join(given)}: only with --output-dir DIR")
        return run_cli(PROG, lambda: _one_bag(args))
    return run_cli(PROG, lambda: _many_bags(args, argv))


def bag_options(args: argparse.Namespace):
    """The per-bag settings of both forms: image topic and ``BagJob``'s keyword arguments.

    Raises:
        InputError: a tracking option out of range.
    """
    from rt_panoptic_ros.ros.bag.fleet_manifest import BagOptions

    job = dict(
        overlay=args.overlay, overlay_alpha=args.overlay_alpha, start_s=args.start, duration_s=args.duration,
        tracking=tracking(args),
    )  # fmt: skip
    return BagOptions(args.image_topic, job)


def _one_bag(args: argparse.Namespace) -> int:

    from tqdm import tqdm

    from rt_panoptic_ros.interrupts import sigterm_as_interrupt
    from rt_panoptic_ros.ros.bag.processing import BagJob, format_stamp
    from rt_panoptic_ros.runtime.predictor import Predictor

    source, output = args.bags
    options = bag_options(args)
    # Every check that needs no model comes first: a typo costs no model loading.
    job = BagJob(source, output, options.image_topic, overwrite=args.overwrite, **options.job)
    try:
        model = bag_model(args.model)
        log_to_stderr(PROG)
        predictor = Predictor(model, device=args.device, backend=args.backend)
        where = f"{model.name} on {predictor.backend.name}/{predictor.device}"
        print(f"{PROG}: {job.total} frame(s) of {args.image_topic} -> {output} "
              f"({', '.join(job.topics.values())}) with {where}", file=sys.stderr)  # fmt: skip
        with tqdm(total=job.total, unit="frame", desc="segment", dynamic_ncols=True) as bar:

            def skipped(frame) -> None:
                stamp = format_stamp(frame.timestamp, job.input.start_time)
                bar.write(f"{PROG}: skipped the frame at bag time {stamp}: {frame.reason}", file=sys.stderr)
                bar.update(1)

            # SIGTERM (kill, timeout, a launch system) stops the run as Ctrl-C does: a valid bag.
            with sigterm_as_interrupt():
                provenance = {"rt_panoptic_ros.model": str(model), "rt_panoptic_ros.backend": where}
                report = job.run(predictor, lambda: bar.update(1), skipped, provenance, **options.run)
    finally:
        job.close()
    rate = f"{report.seconds:.1f} s, {report.fps:.2f} frames/s"
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    if report.interrupted:
        print(f"{PROG}: interrupted after {report.written} of {job.total} frame(s) ({rate}{skipped}); "
              f"{output} is a valid bag holding them", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(f"{PROG}: wrote {output}: {report.written} frame(s) ({rate}){skipped}", file=sys.stderr)
    return 0


def _many_bags(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from rt_panoptic_ros.ros.bag import fleet, fleet_manifest
    from rt_panoptic_ros.ros.bag.worker import probe
    from rt_panoptic_ros.runtime.files import file_sha256

    address = _ray_address(args.ray) if args.ray is not None else None
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise fleet_manifest.FleetError(f"--ray needs Ray, an optional extra: {RAY_HINT}") from None
    options = bag_options(args)
    model = bag_model(args.model)
    if not model.is_file():
        raise CheckpointError(f"{model}: no such model file")
    settings = {**options.settings(), "model": str(model.resolve()), "model_sha256": file_sha256(model)}
    run = fleet.FleetRun(
        args.bags, args.output_dir, settings, overwrite=args.overwrite, max_attempts=args.max_attempts,
        prog=PROG, command=_command(argv),
    )  # fmt: skip
    model_options = fleet_manifest.ModelOptions(model, args.backend, args.device, args.threads_per_worker)

    def execute(run: fleet.FleetRun) -> None:
        if args.ray is None:
            from rt_panoptic_ros.ros.bag.worker import BagWorker

            log_to_stderr(PROG)
            fleet.run_sequential(run, BagWorker(model_options, options))
            return
        from rt_panoptic_ros.ros.bag.ray_runner import run_on_ray

        run_on_ray(
            run, model_options, options, address=address, workers=args.workers,
            workers_per_gpu=args.workers_per_gpu, threads=args.threads_per_worker,
        )  # fmt: skip

    return fleet.run_fleet(run, lambda task: probe(task, options), execute)


def _ray_address(value: str) -> str | None:
    """``--ray``'s address (``None``: a local cluster); a bag path there is a misplaced ``--ray``."""
    from rt_panoptic_ros.ros.bag.fleet_manifest import FleetError

    if value == "local":
        return None
    if Path(value).exists():
        raise FleetError(
            f"--ray {value}: that is a path, not a cluster address; put --ray after the bags, or "
            "write --ray local"
        )
    return value


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name) != parser.get_default(name)


def _command(argv: Sequence[str] | None) -> str:
    import shlex

    return shlex.join([PROG, *(sys.argv[1:] if argv is None else argv)])


def bag_model(path: str | None) -> Path:
    """``--model``, or the bundled model (with a hint in the CLI's own terms when there is none)."""
    from rt_panoptic_ros.ros.bundled import bundled_model_path

    if path is not None:
        return Path(path)
    try:
        return bundled_model_path()
    except CheckpointError:
        raise CheckpointError("no --model given and no bundled model installed; pass --model PATH") from None
