"""The node against its own Predictor: complete-frame rate, lock-step latency and stage times.

usage: python benchmarks/node.py [--model models/small_synthetic.pt] [--height 1024 --width 2048]
           [--frames 6] [--seconds 20] [--lockstep 10] [--gpu-infer-ms 10]
           [--node-env NAME=VALUE ...] [--output benchmarks/node.json]

One run, side by side, on the same synthetic street scenes (``--frames`` of them, cycled):

1. the Predictor in this process, frame after frame, before and after the node's run (their
   mean is the figure: this machine's speed drifts): its own rate (frames / s) and latency;
2. ``panoptic_node`` in its own process over DDS, all four outputs subscribed, fed lock-step
   (each frame after the previous one's four outputs arrived): median latency publish -> last
   output, minus the Predictor's median; and how much of it the node itself took (receipt ->
   all four published, its ``latency_p50_ms``) and the transport the rest;
3. the same node with the camera sending faster than the node can answer (1.5x the
   Predictor's rate) for ``--seconds``: the rate of *complete* frames (all four outputs
   arrived) over the steady part, as a ratio of the Predictor's rate; and the CPU time per
   complete frame of the node's process and of this one (camera and recorder), beside the
   Predictor's CPU time per frame: when every core is busy, as on this 2-core machine, the
   node's ratio can be at most ``Predictor CPU / (node + camera + recorder CPU)``
   (``rate_ceiling_all_cores_busy``);
4. the node's own per-stage times (``/diagnostics``: convert, upload, infer, decode, track,
   overlay, publish; p50 ms) after 2 and after 3, summed per pipeline thread (prepare =
   convert + upload, infer = infer + decode, publish = track + overlay + publish; where each
   stage runs depends on the device, ``ros/pipeline.py``). From the lock-step ones a GPU's
   rate is estimated until it can be measured: a pipeline runs at its slowest thread's pace,
   so with the network and decoder taking ``--gpu-infer-ms`` at 1024x2048 (default 10 ms, a
   current GPU with TensorRT; the paper's V100 with TensorRT took 33 ms, 30.3 FPS, Sec. 5.4),
   the node delivers ``1000 / max(prepare, gpu, publish)`` frames/s against the model's
   ``1000 / gpu`` (the CPU threads costing what they cost here, not slowing each other).

``--node-env NAME=VALUE ...`` sets environment variables of the node's process only (e.g.
``OMP_NUM_THREADS=1``), to compare settings side by side.

Both processes get the shipped Fast DDS profile (large images in milliseconds), and both keep
frame-sized blocks in malloc (``rt_panoptic_ros/allocator.py``), as the node's own ``main``
does: the Predictor measured here runs with the same allocator settings as the node's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from rt_panoptic_ros.allocator import keep_large_blocks
from rt_panoptic_ros.image_io import read_rgb
from rt_panoptic_ros.ros.dds_profile import use_shipped_profile
from rt_panoptic_ros.ros.outputs import OUTPUT_TOPICS
from rt_panoptic_ros.ros.testing.harness import CameraStream, OutputRecorder, Spinner, start_node, stop_node
from rt_panoptic_ros.runtime import Predictor
from rt_panoptic_ros.runtime.bench import time_calls
from rt_panoptic_ros.runtime.machine import cpu_seconds, rss_mb, write_benchmark
from rt_panoptic_ros.training.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "/node_bench"
NAMES = tuple(OUTPUT_TOPICS)
#: The node's pipeline threads and the stages each runs (``ros/pipeline.py``).
PIPELINE_THREADS = {
    "prepare": ("convert", "upload"),
    "infer": ("infer", "decode"),
    "publish": ("track", "overlay", "publish"),
}


def predictor_figures(model: str, frames: list, count: int) -> dict:
    return time_calls(Predictor(model, backend="torch"), frames, count)


def stage_figures(diagnostics: list[DiagnosticArray]) -> dict[str, Any]:
    """The node's stage p50s (ms) from its next ``/diagnostics`` message, and their sums per
    pipeline thread."""
    seen = len(diagnostics)
    deadline = time.monotonic() + 5.0
    while len(diagnostics) == seen and time.monotonic() < deadline:
        time.sleep(0.05)
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    stages = {k: float(v) for k, v in values.items() if k.endswith("_p50_ms") and not k.startswith("latency")}
    threads = {
        name: round(sum(stages.get(f"{stage}_p50_ms", 0.0) for stage in names), 2)
        for name, names in PIPELINE_THREADS.items()
    }
    return {
        "stages": stages,
        "threads": threads,
        "latency_p50_ms": float(values.get("latency_p50_ms", "nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--lockstep", type=int, default=10)
    parser.add_argument("--gpu-infer-ms", type=float, default=10.0)
    parser.add_argument("--node-env", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--output", default=str(Path(__file__).with_name("node.json")))
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = use_shipped_profile()
    malloc = keep_large_blocks()

    workdir = Path(tempfile.mkdtemp(prefix="node_bench_"))
    write_dataset(workdir / "scenes", args.frames, seed=11, height=args.height, width=args.width)
    frames = [read_rgb(p) for p in sorted((workdir / "scenes" / "images").iterdir())]

    predictor = predictor_figures(args.model, frames, max(10, args.lockstep))
    print(f"predictor: {predictor['fps']:.2f} FPS, median {predictor['median_ms']:.1f} ms", file=sys.stderr)

    process = start_node({"model": args.model, "backend": "torch", "qos_reliability": "reliable"},
                         {"__ns": NAMESPACE}, log=workdir / "node.log",
                         env={**os.environ, **dict(kv.split("=", 1) for kv in args.node_env)})  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    camera = CameraStream(NAMESPACE, context=context)
    recorder = OutputRecorder(NAMESPACE, context=context)
    diagnostics: list[DiagnosticArray] = []
    recorder.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    spinner = Spinner(camera, recorder)
    try:
        if not camera.wait_for_subscriber(120.0, process):
            raise SystemExit(f"panoptic_node did not start: {(workdir / 'node.log').read_text()}")
        deadline = time.monotonic() + 30
        while not recorder.connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        for frame in frames[:2]:  # warm the path up (and let the node match the recorder)
            recorder.wait_complete(camera.send(frame), 60.0)

        # 3. lock-step latency, first: the node's stage times then are those of frames alone
        arrival = recorder.received.arrival
        latencies = []
        for k in range(args.lockstep):
            key = camera.send(frames[k % len(frames)])
            if recorder.wait_complete(key, 60.0):
                latencies.append(max(arrival[n][key] for n in NAMES) - camera.sent[key])
        alone_stages = stage_figures(diagnostics)

        # 2. camera faster than the node: complete frames per second over the steady part
        period = 1.0 / (1.5 * predictor["fps"])
        cpu_before = cpu_seconds(process.pid), time.process_time()
        sent, start = [], time.monotonic()
        while time.monotonic() - start < args.seconds:
            sent.append(camera.send(frames[len(sent) % len(frames)]))
            time.sleep(max(0.0, start + len(sent) * period - time.monotonic()))
        time.sleep(3.0)  # the last answers arrive
        cpu_used = cpu_seconds(process.pid) - cpu_before[0], time.process_time() - cpu_before[1]
        done = sorted(max(arrival[n][k] for n in NAMES) for k in sent if recorder.complete(k))
        steady = done[len(done) // 5 :]  # skip the first fifth: start-up
        node_fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
        loaded_stages = stage_figures(diagnostics)
        node_rss = rss_mb(process.pid)
    finally:
        spinner.stop()
        camera.destroy_node()
        recorder.destroy_node()
        rclpy.shutdown(context=context)
        stop_node(process)

    after = predictor_figures(args.model, frames, max(10, args.lockstep))
    print(f"predictor after: {after['fps']:.2f} FPS, median {after['median_ms']:.1f} ms", file=sys.stderr)
    predictor_fps = (predictor["fps"] + after["fps"]) / 2
    predictor_ms = (predictor["median_ms"] + after["median_ms"]) / 2
    node_ms = statistics.median(latencies) * 1000 if latencies else float("nan")
    # CPU per complete frame while the camera was faster: the node's process, and this one's
    # (the camera sending every frame, the recorder receiving the outputs). With every core
    # busy, the node's rate can be at most the Predictor's times the ratio of their CPU costs.
    predictor_cpu_ms = (predictor["cpu_ms"] + after["cpu_ms"]) / 2
    per_frame = [used / max(1, len(done)) * 1000 for used in cpu_used]
    cpu = {
        "predictor_cpu_ms_per_frame": round(predictor_cpu_ms, 1),
        "node_cpu_ms_per_complete_frame": round(per_frame[0], 1),
        "camera_and_recorder_cpu_ms_per_complete_frame": round(per_frame[1], 1),
        "rate_ceiling_all_cores_busy": round(predictor_cpu_ms / sum(per_frame), 3),
    }
    threads = alone_stages["threads"]
    slowest_thread = max(args.gpu_infer_ms, threads["prepare"], threads["publish"])
    gpu_case = {
        "assumed_infer_decode_ms": args.gpu_infer_ms,
        "cpu_threads_from": "lock-step stage times (frames alone, as on a machine with cores to spare)",
        "node_fps": round(1000 / slowest_thread, 1),
        "model_fps": round(1000 / args.gpu_infer_ms, 1),
        "node_over_model_rate": round(args.gpu_infer_ms / slowest_thread, 3),
    }
    write_benchmark(
        args.output,
        "panoptic_node vs its Predictor: complete-frame rate, lock-step overhead, stage times",
        model=Path(args.model).name, input=[args.height, args.width], frames=args.frames,
        backend="torch (CPU)", transport=f"reliable, two processes, {profile.describe()}",
        malloc=malloc.describe(),
        predictor_fps=round(predictor_fps, 3), predictor_median_ms=round(predictor_ms, 1),
        predictor_before_after_fps=[round(predictor["fps"], 3), round(after["fps"], 3)],
        camera_hz=round(1 / period, 2), sent=len(sent), complete_frames=len(done),
        node_complete_fps=round(node_fps, 3), node_over_predictor_rate=round(node_fps / predictor_fps, 3),
        lockstep_node_median_ms=round(node_ms, 1),
        lockstep_overhead_ms=round(node_ms - predictor_ms, 1),
        # receipt -> all four published, in the node; the rest of the lock-step time is the
        # transport: the camera's publish, DDS in and out, the recorder's receiving
        node_latency_p50_ms_lockstep=alone_stages["latency_p50_ms"],
        transport_ms_lockstep=round(node_ms - alone_stages["latency_p50_ms"], 1),
        node_stage_p50_ms_lockstep=alone_stages["stages"],
        node_thread_p50_ms_lockstep=threads,
        node_stage_p50_ms_camera_faster=loaded_stages["stages"],
        node_thread_p50_ms_camera_faster=loaded_stages["threads"],
        gpu_case_estimate=gpu_case,
        cpu_while_camera_faster=cpu, node_rss_mb_after=round(node_rss),
        node_env=args.node_env,
        node_latency_p50_ms_camera_faster=loaded_stages["latency_p50_ms"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
