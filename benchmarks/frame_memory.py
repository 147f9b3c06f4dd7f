"""Peak memory one large frame adds to a process that runs the Predictor.

usage: python benchmarks/frame_memory.py [--model models/small_synthetic.pt]
           [--before REV] [--repeats 2] [--track] [--output benchmarks/frame_memory.json]

Each measurement runs in a fresh subprocess: load the Predictor (CPU, the model's own input
size, 128x256 for the bundled model), run one small frame of the same kind (the steady state:
model loaded, caches and allocator warm), then reset the kernel's peak-RSS mark
(``/proc/self/clear_refs`` 5) and run the measured frame. The figure is ``VmHWM`` after the
frame minus ``VmRSS`` before it, so it counts what the frame's processing allocates at its
peak, result maps included, and not the model or the interpreter:

- ``rgb8 8000x8000``: a raw frame (183 MiB, what a ``sensor_msgs/Image`` view gives the
  node), already in memory when the mark is reset; it is not counted.
- ``png 16384x5400``: a small PNG (a ``CompressedImage``'s bytes) decoded by
  :func:`~rt_panoptic_ros.ros.image_conversion.compressed_to_rgb`, then predicted: the decoded
  frame (253 MiB) is counted.

The frames are a synthetic street scene (``rt-panoptic-synth``'s generator, 256x512) resized
up, so that the decoder meets objects, boundaries and stuff as in a camera image. ``--before``
runs the same measurements with the package as it was at a git revision (extracted with
``git archive``), so that before and after come from one command on one machine. Each process
sets malloc up as the node does (``rt_panoptic_ros/allocator.py``) where its revision can. ``--track``
also runs the node's tracker on each result (``PanopticTracker.update``, as the node does by
default), so that the track-id map it adds is counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
#: The package before the memory work (``fit`` in float32 at full resolution).
BEFORE_REVISION = "1380779"
#: (name, kind, height, width) of each measured frame.
FRAMES = (("rgb8 8000x8000", "rgb8", 8000, 8000), ("png 16384x5400", "png", 5400, 16384))
#: The steady-state frame run first in each subprocess, and measured once on its own.
SMALL = (256, 256)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _worker(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line. Runs with the package of ``--package-root``."""
    sys.path.insert(0, args.package_root)
    import cv2
    import numpy as np
    import torch
    from sensor_msgs.msg import CompressedImage

    import rt_panoptic_ros
    from rt_panoptic_ros import Predictor
    from rt_panoptic_ros.ros.image_conversion import compressed_to_rgb

    assert Path(rt_panoptic_ros.__file__).is_relative_to(args.package_root), rt_panoptic_ros.__file__
    try:  # malloc as the node's process has it (allocator.py), where the revision has it
        from rt_panoptic_ros.allocator import keep_large_blocks
    except ImportError:
        pass
    else:
        keep_large_blocks()
    scene = np.load(args.scene)
    predictor = Predictor(args.model)

    def as_png(height: int, width: int) -> CompressedImage:
        big = cv2.resize(scene, (width, height), interpolation=cv2.INTER_NEAREST)
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        assert ok
        msg = CompressedImage(format="png")
        msg.data = encoded.tobytes()
        return msg

    def frame(height: int, width: int):
        if args.kind == "png":
            if (height, width) == (args.height, args.width) and args.png:
                msg = CompressedImage(format="png")  # encoded by the parent: no trace here
                msg.data = Path(args.png).read_bytes()
                return msg
            return as_png(height, width)
        return cv2.resize(scene, (width, height), interpolation=cv2.INTER_LINEAR)

    tracker = None
    if args.track:
        from rt_panoptic_ros.tracking import PanopticTracker

        tracker = PanopticTracker()

    def run(item) -> object:
        image = compressed_to_rgb(item) if args.kind == "png" else item
        result = predictor(image)
        return tracker.update(result) if tracker is not None else result

    with torch.inference_mode():
        run(frame(*SMALL))  # the steady state
        item = frame(args.height, args.width)
        gc.collect()
        reset = True
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        except OSError:
            reset = False
        rss = _status_kib("VmRSS")
        result = run(item)
        hwm = _status_kib("VmHWM")
    print(
        json.dumps(
            {
                "peak_added_mib": round((hwm - rss) / 1024, 1),
                "rss_before_mib": round(rss / 1024, 1),
                "peak_mib": round(hwm / 1024, 1),
                "peak_mark_reset": reset,
                "compressed_bytes": len(item.data) if args.kind == "png" else None,
                "result_maps_mib": round(
                    (
                        result.semantic.numel() * result.semantic.element_size()
                        + result.instance.numel() * result.instance.element_size()
                    )
                    / MiB,
                    1,
                ),
                "segments": len(result.segments),
            }
        )
    )


def _measure(
    package_root: Path, scene: Path, model: str, kind: str, size: tuple[int, int], track: bool = False
) -> dict:
    png = scene.with_name(f"{size[0]}x{size[1]}.png")
    if kind == "png" and not png.exists():
        import cv2
        import numpy as np

        big = cv2.resize(np.load(scene), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        png.write_bytes(cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))[1].tobytes())
    command = [
        sys.executable, __file__, "--worker", "--package-root", str(package_root), "--scene", str(scene),
        "--model", model, "--kind", kind, "--height", str(size[0]), "--width", str(size[1]),
        "--png", str(png), *(["--track"] if track else []),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(command)}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _extract(revision: str, folder: Path) -> str:
    """The package ``rt_panoptic_ros/`` at ``revision``, unpacked under ``folder``; its full hash."""
    full = subprocess.run(
        ["git", "rev-parse", revision], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", full, "rt_panoptic_ros"], cwd=ROOT, check=True, capture_output=True
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return full


def _series(package_root: Path, scene: Path, model: str, repeats: int, track: bool = False) -> dict:
    out = {}
    for name, kind, height, width in FRAMES:
        runs = [_measure(package_root, scene, model, kind, (height, width), track) for _ in range(repeats)]
        small = _measure(package_root, scene, model, kind, SMALL, track)
        out[name] = {
            "peak_added_mib": [r["peak_added_mib"] for r in runs],
            "frame_mib": round(height * width * 3 / MiB, 1),
            "compressed_bytes": runs[0]["compressed_bytes"],
            "result_maps_mib": runs[0]["result_maps_mib"],
            "segments": runs[0]["segments"],
            "rss_before_mib": runs[0]["rss_before_mib"],
            "peak_mark_reset": all(r["peak_mark_reset"] for r in runs),
            f"small_{SMALL[0]}x{SMALL[1]}_peak_added_mib": small["peak_added_mib"],
        }
        print(f"{package_root}: {name}: {out[name]}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument(
        "--before", default=BEFORE_REVISION, help="git revision measured as 'before'; '' = skip"
    )
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per large frame")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "frame_memory.json"))
    parser.add_argument("--track", action="store_true", help="also track each result, as the node does")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--package-root", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--png", help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    import numpy as np

    from rt_panoptic_ros.runtime.machine import write_benchmark
    from rt_panoptic_ros.training.data.synthetic import generate_scene

    with tempfile.TemporaryDirectory(prefix="frame_memory_") as tmp:
        scene = Path(tmp) / "scene.npy"
        np.save(scene, generate_scene(np.random.default_rng(3), 256, 512).image)
        results = {}
        before = None
        if args.before:
            before = _extract(args.before, Path(tmp) / "before")
            results["before"] = _series(Path(tmp) / "before", scene, args.model, args.repeats)
        results["after"] = _series(ROOT, scene, args.model, args.repeats)
        if args.track:
            results["after_tracked"] = _series(ROOT, scene, args.model, args.repeats, track=True)
    write_benchmark(
        args.output,
        "peak RSS added by one large frame through the Predictor (CPU), fresh process per figure",
        model=os.path.relpath(args.model, ROOT),
        before_revision=before,
        method="VmHWM after the frame minus VmRSS before it, peak mark reset by /proc/self/clear_refs",
        results=results,
    )


if __name__ == "__main__":
    main()
