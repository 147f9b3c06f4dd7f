"""``rt-panoptic-demo``: the node on a synthetic camera stream, end to end over DDS.

Starts ``panoptic_node`` as its own process, publishes a folder of images to it at a fixed
rate from this process (as a camera driver would), records what comes back, writes the
overlays and ``report.json`` (frames_in, frames_out, fps, latency_p50_ms, latency_p90_ms,
dropped) and prints a short summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rclpy

from rt_panoptic_ros.cli_support import EXIT_ERROR, make_parser, run_cli
from rt_panoptic_ros.config import preset
from rt_panoptic_ros.errors import InputError, RTPanopticError
from rt_panoptic_ros.image_io import read_rgb, write_rgb
from rt_panoptic_ros.infer import list_images
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.ros.bundled import bundled_model_path
from rt_panoptic_ros.ros.image_conversion import image_to_rgb
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node

NAMESPACE = "/demo_camera"


def run_demo(
    frames: list[np.ndarray], model: str, output: Path, rate: float, count: int, device: str, backend: str
) -> dict[str, float]:
    """Publish ``count`` frames (cycling through ``frames``) at ``rate`` Hz; return the report."""
    (output / "overlay").mkdir(parents=True, exist_ok=True)
    parameters = {"qos_reliability": "reliable", "device": device, "backend": backend}
    if model:
        parameters["model"] = model
    node_process = start_node(parameters, {"__ns": NAMESPACE}, log=output / "node.log")
    context = rclpy.Context()
    rclpy.init(context=context)
    camera = CameraStream(NAMESPACE, frame_id="demo_camera", context=context)
    recorder = OutputRecorder(NAMESPACE, outputs=("overlay", "detections"), context=context)
    spinner = Spinner(camera, recorder)
    try:
        print(f"waiting for panoptic_node (log: {output / 'node.log'}) ...", file=sys.stderr)
        if not camera.wait_for_subscriber(timeout=120.0, process=node_process):
            code = node_process.poll()
            raise InputError(
                f"panoptic_node did not come up{_why(output / 'node.log', code)}; see {output / 'node.log'}"
            )
        deadline = time.monotonic() + 10.0  # and the node has matched the recorder: else it skips outputs
        while not recorder.connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        for k in range(count):
            camera.send(frames[k % len(frames)])
            time.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
        deadline = time.monotonic() + 30.0  # let the last frame come back
        while time.monotonic() < deadline and recorder.count("overlay") < count:
            last = recorder.count("overlay")
            time.sleep(2.0)
            if recorder.count("overlay") == last:
                break
        duration = time.monotonic() - start
    finally:
        spinner.stop()
        camera.destroy_node()
        recorder.destroy_node()
        rclpy.shutdown(context=context)
        stop_node(node_process)
    overlays = recorder.received.messages["overlay"]
    arrivals = recorder.received.arrival["overlay"]
    for k, key in enumerate(sorted(overlays)):
        write_rgb(output / "overlay" / f"{k:04d}.png", image_to_rgb(overlays[key]))
    latencies = sorted((arrivals[key] - camera.sent[key]) * 1000 for key in overlays if key in camera.sent)
    report = {
        "frames_in": count,
        "frames_out": len(overlays),
        "fps": round(len(overlays) / duration, 2) if duration else 0.0,
        # The node's own rule (its diagnostics report latency_p50_ms / _p90_ms too).
        "latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_p90_ms": round(percentile(latencies, 90), 1) if latencies else None,
        "dropped": count - len(overlays),
        "rate_hz": rate,
        "model": model or "(bundled)",
    }
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _bundled_or_stand_in(output: Path) -> str:
    """The bundled model, or, while none is shipped, an untrained stand-in (said loudly).

    The stand-in exercises the whole pipeline (DDS, conversions, inference, decoding,
    overlays) with random weights: its overlays show noise, not a scene.
    """
    try:
        return str(bundled_model_path())
    except RTPanopticError:
        path = output / "stand_in_model.pt"
        if not path.exists():
            save_checkpoint(
                RTPanoNet(preset("mobile_cityscapes")).eval(), path, meta={"note": "untrained stand-in"}
            )
        print(
            f"no bundled model yet: using an untrained stand-in ({path}); its overlays show noise",
            file=sys.stderr,
        )
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("rt-panoptic-demo", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "--frames", required=True, help="folder of images to stream (e.g. rt-panoptic-synth output)"
    )
    parser.add_argument("--model", default="", help="model file; empty = the bundled model")
    parser.add_argument("--output", default="demo_output", help="where overlays and report.json go")
    parser.add_argument("--rate", type=float, default=5.0, help="camera frame rate (Hz)")
    parser.add_argument("--count", type=int, default=30, help="frames to publish")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args(argv)

    def body() -> int:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        frames = [read_rgb(p) for p in list_images(args.frames)]
        Path(args.output).mkdir(parents=True, exist_ok=True)
        model = args.model or _bundled_or_stand_in(Path(args.output))
        report = run_demo(frames, model, Path(args.output), args.rate, args.count, args.device, args.backend)
        print(
            f"demo: {report['frames_out']}/{report['frames_in']} frames segmented at {report['fps']} FPS, "
            f"latency p50 {report['latency_p50_ms']} ms, p90 {report['latency_p90_ms']} ms, "
            f"{report['dropped']} dropped (keep-latest); overlays and report.json in {args.output}"
        )
        return 0 if report["frames_out"] > 0 else EXIT_ERROR

    return run_cli(parser.prog, body)


def _why(log: Path, code: int | None) -> str:
    """The node's own error line from its log (what a user needs), else its exit status."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
    return f": {errors[-1]}" if errors else f" (exit status {code})"
