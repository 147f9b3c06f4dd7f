"""One command for a machine with a GPU: the GPU tests, then every backend's latency per stage.

usage: python benchmarks/gpu_check.py [--device cuda] [--quick] [--output-dir benchmarks] [--no-tests]

Runs from the repository root with no install and no venv (the checkout goes on ``sys.path``)
and needs no ROS. In order, each part within its time budget (about 7 minutes in all):

1. ``pytest -q test/test_gpu.py`` in a subprocess: exit code, counts, skip reasons;
2. ``torch``: fp32, fp16, fp16 + CUDA graphs;
3. ``onnxruntime``: the CUDA execution provider (onnxruntime-gpu), fp32 and the fp16 graph;
4. ``tensorrt``: fp16 and int8 (calibrated on synthetic scenes) engines;
5. ``node_glue``: the panoptic node's per-frame work outside ROS on the device, per pipeline
   thread, and the node's rate estimated from it (``benchmarks/node_glue.py``);

each on the bundled model and the TRI preset (``tri_cityscapes``, random weights: latency
does not depend on the weights' values; decode time does follow the instances found, listed
per row), at 512x1024 and 1024x2048, batch 1 and 4: the Predictor's four stages and end to end,
timed by :func:`~rt_panoptic_ros.runtime.bench.time_stages` (the ``rt-panoptic-bench`` timer).
Every piece this machine lacks (CUDA, onnxruntime-gpu, TensorRT, onnxconverter-common, cv2)
is a row with ``status: skipped`` and the reason; an unexpected error is ``status: failed``
with its message, and the next row runs. Writes ``gpu_<part>.json`` per part and
``gpu_check_summary.json`` into ``--output-dir``; exits 1 if a test or a row failed.

``--device cpu --quick --output-dir DIR``: the same path on the CPU (one small size, few
frames; parts that need CUDA skip), to prove the script before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a source checkout: no install needed
sys.path.insert(0, str(ROOT / "test"))

import torch  # noqa: E402
from source_checkout import map_training_subpackage  # noqa: E402  (test/source_checkout.py)

#: Seconds each part may start new rows in; a row that starts in time runs to its end.
BUDGET_S = {"tests": 200, "torch": 150, "onnxruntime": 45, "tensorrt": 60}
SIZES = ((512, 1024), (1024, 2048))
BATCHES = (1, 4)
MODELS = (str(ROOT / "models" / "small_synthetic.pt"), "tri_cityscapes")
#: Per part: (backend, precision, cuda_graph) rows.
VARIANTS = {
    "torch": (("torch", "fp32", False), ("torch", "fp16", False), ("torch", "fp16", True)),
    "onnxruntime": (("onnxruntime", "fp32", False), ("onnxruntime", "fp16", False)),
    "tensorrt": (("tensorrt", "fp16", False), ("tensorrt", "int8", False)),
}
NO_FP16_ONNX = "needs onnxconverter-common for fp16 ONNX"


def run_tests(out_dir: Path, budget_s: float) -> dict[str, Any]:
    """``pytest -q test/test_gpu.py`` in a subprocess; its exit code, counts and skip reasons."""
    junit = out_dir / "gpu_check_junit.xml"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "test/test_gpu.py"]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "error": f"pytest ran past its budget of {budget_s:.0f} s"}
    print(done.stdout[-3000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
    result: dict[str, Any] = {"command": " ".join(command), "exit_code": done.returncode}
    result["duration_s"] = round(time.monotonic() - started, 1)
    if junit.exists():
        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        result |= counts
        result["not_passed"] = {
            f"{case.get('name')}": f"{child.tag}: {(child.get('message') or '').splitlines()[0][:200]}"
            for case in suite.iter("testcase")
            for child in case
            if child.tag in ("skipped", "failure", "error")
        }
        junit.unlink()
    else:
        result["output_tail"] = (done.stdout + done.stderr)[-2000:]
    return result


def calibration_folder(work: Path, size: tuple[int, int], count: int) -> Path:
    """``count`` synthetic street scenes at ``size`` (int8 calibration), written once."""
    folder = work / f"calibration_{size[0]}x{size[1]}"
    if not folder.exists():
        map_training_subpackage()
        from rt_panoptic_ros.training.data.synthetic import write_dataset

        write_dataset(folder, count, seed=2, height=size[0], width=size[1], progress=False)
    return folder / "images"


class BatchOf:
    """A Predictor to :func:`time_stages` whose every frame is ``n`` copies of its image: the
    same timer, stages and synchronisation at batch ``n``."""

    def __init__(self, predictor: Any, n: int) -> None:
        self.predictor, self.n, self.device = predictor, n, predictor.device

    def upload(self, images: list) -> Any:
        return self.predictor.upload(list(images) * self.n)

    def infer(self, images: torch.Tensor) -> Any:
        return self.predictor.infer(images)

    def decode(self, outputs: Any, batch: Any) -> Any:
        return self.predictor.decode(outputs, batch)

    def download(self, results: list) -> list:
        return self.predictor.download(results)


def skip_reason(backend: str, precision: str, device: str) -> str | None:
    """Why a row cannot run here, found without building anything (``None``: try it)."""
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "needs an NVIDIA GPU with TensorRT (the tensorrt package is not installed)"
    if (
        backend != "torch"
        and precision == "fp16"
        and importlib.util.find_spec("onnxconverter_common") is None
    ):
        return NO_FP16_ONNX
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return None


def run_part(part: str, args: argparse.Namespace, work: Path, runtime: Any) -> list[dict[str, Any]]:
    """Every (size, batch, model, variant) row of ``part``, most important first, in its budget:
    once it is spent, the rest (the largest inputs and batches) are skipped, saying so."""
    deadline = time.monotonic() + BUDGET_S[part]
    plan = itertools.product(args.sizes, args.batches, MODELS, VARIANTS[part])
    rows = []
    for (height, width), batch, model, (backend, precision, graph) in plan:
        path, label = runtime.model_file(model, work)
        row: dict[str, Any] = {
            "model": label, "backend": backend, "precision": precision, "cuda_graph": graph,
            "input": [height, width], "batch": batch,
        }  # fmt: skip
        why_not = skip_reason(backend, precision, args.device)
        if why_not is None and time.monotonic() > deadline:
            why_not = f"the {part} part's time budget ({BUDGET_S[part]} s) was spent"
        if why_not is not None:
            rows.append(row | {"status": "skipped", "reason": why_not})
            continue
        print(f"{part}: {label} {precision} graph={graph} {height}x{width} x{batch}", file=sys.stderr)
        rows.append(row | run_row(row, path, args, work, runtime))
        print(
            f"  -> {rows[-1]['status']} {rows[-1].get('reason', rows[-1].get('error', ''))}", file=sys.stderr
        )
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def run_row(row: dict[str, Any], path: Path, args: argparse.Namespace, work: Path, runtime: Any) -> dict:
    """Build the row's Predictor and time it: ``status: ran`` and the numbers, or why not."""
    from rt_panoptic_ros.errors import ConfigError, EngineError

    (height, width), batch, precision = row["input"], row["batch"], row["precision"]
    try:
        calibration = None
        if precision == "int8":
            calibration = calibration_folder(work, (height, width), args.calibration_images)
        predictor = runtime.Predictor(
            path, device=args.device, backend=row["backend"], precision=precision,
            input_size=(height, width), batch_size=batch, cuda_graph=row["cuda_graph"],
            cache_dir=work / "cache", calibration_dir=calibration,
        )  # fmt: skip
        cuda = predictor.device.type == "cuda"
        result = {
            "status": "ran", "device": str(predictor.device), "backbone": predictor.cfg.model.backbone,
            # torch's TF32 switch: "fp32" convolutions on Ampere+ are TF32 while it is on
            "tf32": torch.backends.cudnn.allow_tf32 if cuda and row["backend"] == "torch" else None,
        }  # fmt: skip
        image = runtime.random_image(height, width)
        result |= runtime.time_stages(BatchOf(predictor, batch), image, args.frames, args.warmup)
        result["images_per_s"] = round(result["fps"] * batch, 2)
        return result
    except (ConfigError, EngineError) as error:  # the package's own "cannot run here"
        return {"status": "skipped", "reason": str(error)}
    except ModuleNotFoundError as error:
        return {
            "status": "skipped",
            "reason": NO_FP16_ONNX if error.name == "onnxconverter_common" else str(error),
        }
    except Exception as error:  # one row's failure is recorded, and the next row runs
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"[:500]}


class Runtime:
    """What the benchmark parts need from the package, imported once (cv2 comes with it)."""

    def __init__(self) -> None:
        import numpy as np

        from rt_panoptic_ros import Predictor
        from rt_panoptic_ros.runtime.bench import resolve_model, time_stages

        self.Predictor, self.time_stages, self._resolve = Predictor, time_stages, resolve_model
        self.random_image: Callable[[int, int], Any] = lambda h, w: np.random.default_rng(0).integers(
            0, 256, (h, w, 3), dtype=np.uint8
        )
        self._files: dict[str, tuple[Path, str]] = {}

    def model_file(self, model: str, work: Path) -> tuple[Path, str]:
        """A model file and its label, as rt-panoptic-bench resolves it; a preset is saved once,
        so that its ONNX exports and engines are made once (they are keyed on the file's hash)."""
        if model not in self._files:
            self._files[model] = self._resolve(model, work)
        return self._files[model]


def run_node_glue(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks/node_glue.py`` on the device, into ``gpu_node_glue.json``; its summary."""
    import node_glue  # benchmarks/node_glue.py, beside this script

    from rt_panoptic_ros.runtime.machine import write_benchmark

    path = args.output_dir / "gpu_node_glue.json"
    size = args.sizes[-1]  # 1024x2048, the node's camera resolution (the quick size with --quick)
    try:
        figures = node_glue.measure(args.device, args.frames, size, ROOT / "benchmarks" / "node.json")
    except Exception as error:  # recorded; the check goes on
        why = f"{type(error).__name__}: {error}"[:500]
        return {"file": None, "status": "failed", "failed": 1, "error": why}
    write_benchmark(path, "GPU check, node_glue: the node's work outside ROS per pipeline thread", **figures)
    rate = figures["node_over_model_rate"]
    return {"file": path.name, "status": "ran", "failed": 0, "node_over_model_rate": rate}


def summarize_part(rows: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [r["status"] for r in rows]
    counts = {s: statuses.count(s) for s in ("ran", "skipped", "failed")}
    reasons = sorted({r["reason"] for r in rows if r["status"] == "skipped"})
    return {"status": "ran" if counts["ran"] else "skipped", **counts, "skip_reasons": reasons}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda[:k], or cpu for a dry run")
    parser.add_argument("--quick", action="store_true", help="one size, 2 timed frames")
    parser.add_argument(
        "--output-dir", type=Path, help="default: benchmarks/ on CUDA, a new temp folder on cpu"
    )
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest run")
    parser.add_argument("--calibration-images", type=int, default=16)
    args = parser.parse_args(argv)
    if args.output_dir is None:
        cuda = args.device.startswith("cuda")
        args.output_dir = ROOT / "benchmarks" if cuda else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    # A 2-core CPU runs the TRI model at ~1 s per 256x512 image: the dry run stays small.
    quick_size = (512, 1024) if args.device.startswith("cuda") else (256, 512)
    args.sizes = (quick_size,) if args.quick else SIZES
    args.batches = BATCHES
    args.frames, args.warmup = (2, 1) if args.quick else (20, 5)
    if args.quick:
        args.calibration_images = min(args.calibration_images, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    from rt_panoptic_ros.runtime.machine import write_benchmark

    summary: dict[str, Any] = {"device": args.device, "quick": args.quick, "parts": {}}
    tests = None if args.no_tests else run_tests(args.output_dir, BUDGET_S["tests"])
    summary["tests"] = tests if tests is not None else {"status": "skipped", "reason": "--no-tests"}
    try:
        runtime: Runtime | None = Runtime()
        missing = None
    except ModuleNotFoundError as error:  # cv2: rt_panoptic_ros.runtime reads images with it
        runtime, missing = (
            None,
            f"{error.name} is not installed: rt_panoptic_ros.runtime imports it ({error})",
        )
    settings = {
        "sizes": [list(s) for s in args.sizes], "batches": list(args.batches), "frames": args.frames,
        "warmup": args.warmup, "models": [Path(m).name for m in MODELS], "budget_s": BUDGET_S,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu_check_work_") as work:
        torch.set_grad_enabled(False)
        for part in ("torch", "onnxruntime", "tensorrt"):
            if runtime is None:
                rows = [{"status": "skipped", "reason": missing}]
            else:
                rows = run_part(part, args, Path(work), runtime)
            path = args.output_dir / f"gpu_{part}.json"
            write_benchmark(
                path, f"GPU check, {part}: Predictor latency per stage", settings=settings, results=rows
            )
            summary["parts"][part] = {"file": path.name, **summarize_part(rows)}
        summary["parts"]["node_glue"] = run_node_glue(args)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    write_benchmark(
        args.output_dir / "gpu_check_summary.json", "GPU check: tests and benchmark parts", **summary
    )
    failed = tests is not None and tests.get("exit_code") != 0
    failed |= any(p["failed"] for p in summary["parts"].values())
    print(f"GPU check done in {summary['wall_s']:.0f} s: {'FAILED' if failed else 'ok'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
