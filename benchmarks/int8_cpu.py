"""int8 on the CPU: ONNX Runtime on the int8 Q/DQ export vs fp32 ONNX Runtime vs torch, side by side.

usage: python benchmarks/int8_cpu.py [--model models/small_synthetic.pt] [--inputs 128x256 512x1024]
           [--num 100] [--seed 7] [--calibration-num 32] [--calibration-seed 2] [--image-size 256x512]
           [--repeats 5] [--calls 10] [--output benchmarks/int8_cpu.json]

For each network input size: exports the model at that size in fp32 and in int8
(``rt-panoptic-export --precision int8``, calibrated on ``--calibration-num`` synthetic images
of another seed), then

- speed: the backend's network call on one prepared batch, the three backends interleaved
  (``--repeats`` rounds of ``--calls`` calls each; the median round), and the Predictor end to
  end (prepare + network + decode) the same way;
- accuracy: PQ / SQ / RQ and mIoU on ``--num`` held-out synthetic images (``--seed``) through
  each Predictor, scored by the project's evaluator.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "test"))

from decoder_pq import score  # noqa: E402  (one PQ scoring for every benchmark)
from tqdm import tqdm  # noqa: E402

from rt_panoptic_ros import Predictor  # noqa: E402
from rt_panoptic_ros.image_io import read_panoptic_png, read_rgb  # noqa: E402
from rt_panoptic_ros.model import load_model  # noqa: E402
from rt_panoptic_ros.runtime.export import export_onnx  # noqa: E402
from rt_panoptic_ros.runtime.files import file_sha256  # noqa: E402
from rt_panoptic_ros.runtime.machine import write_benchmark  # noqa: E402
from rt_panoptic_ros.training.data.panoptic_format import load_panoptic_json  # noqa: E402
from rt_panoptic_ros.training.data.synthetic import write_dataset  # noqa: E402


def predictors(model: Path, work: Path, size: tuple[int, int], calibration: Path) -> dict[str, Predictor]:
    """torch (fp32), onnxruntime fp32 and onnxruntime int8 at input ``size``."""
    network = load_model(model)
    files = {}
    for precision in ("fp32", "int8"):
        files[precision] = work / f"model.{size[0]}x{size[1]}.{precision}.onnx"
        report = export_onnx(
            network, files[precision], *size, source_sha256=file_sha256(model), precision=precision,
            calibration_dir=calibration if precision == "int8" else None,
        )  # fmt: skip
        print(report.summary(), file=sys.stderr)
    return {
        "torch fp32": Predictor(model, backend="torch", input_size=size),
        "onnxruntime fp32": Predictor(files["fp32"], backend="onnxruntime"),
        "onnxruntime int8": Predictor(files["int8"], backend="onnxruntime"),
    }


def timings(runs: dict[str, Predictor], image, repeats: int, calls: int) -> dict[str, dict[str, float]]:
    """Median per-call ms of the network alone and of the Predictor end to end, interleaved."""
    batch = {name: p.upload([image]).images for name, p in runs.items()}
    rounds: dict[str, dict[str, list[float]]] = {name: {"network": [], "end_to_end": []} for name in runs}
    for name, p in runs.items():  # warm-up
        p.infer(batch[name])
        p(image)
    for _ in tqdm(range(repeats), desc="timing rounds", unit="round"):
        for name, p in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                p.infer(batch[name])
            rounds[name]["network"].append((time.perf_counter() - start) * 1000 / calls)
            start = time.perf_counter()
            for _ in range(calls):
                p(image)
            rounds[name]["end_to_end"].append((time.perf_counter() - start) * 1000 / calls)
    return {
        name: {f"{stage}_ms": round(statistics.median(v), 2) for stage, v in stages.items()}
        for name, stages in rounds.items()
    }


def accuracy(predictor: Predictor, folder: Path, label: str) -> dict:
    """PQ etc. of ``predictor`` on the synthetic split in ``folder``."""
    gt = load_panoptic_json(folder / "panoptic.json", ground_truth=True)
    items = []
    for ann in tqdm(gt.annotations, desc=label, unit="image"):
        image = read_rgb(folder / "images" / ann.file_name)
        items.append((read_panoptic_png(folder / "panoptic" / ann.file_name), ann.segments, image))

    def decoder(image, _content, _original):
        return predictor(image)

    decoder.cfg = predictor.cfg
    result = score(gt.categories, [(g, s, image, None, None) for g, s, image in items], decoder)
    return {k: v for k, v in result.items() if k != "per_class_pq"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--inputs", nargs="+", default=["128x256", "512x1024"])
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calibration-num", type=int, default=32)
    parser.add_argument("--calibration-seed", type=int, default=2)
    parser.add_argument("--image-size", default="256x512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--output", default=str(Path(__file__).with_name("int8_cpu.json")))
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    work = Path(tempfile.mkdtemp(prefix="int8_cpu_"))
    height, width = (int(v) for v in args.image_size.split("x"))
    write_dataset(
        work / "calibration", args.calibration_num, seed=args.calibration_seed, height=height, width=width
    )
    write_dataset(work / "held_out", args.num, seed=args.seed, height=height, width=width)
    image = read_rgb(next(iter(sorted((work / "held_out" / "images").iterdir()))))
    results = []
    for size_text in args.inputs:
        size = tuple(int(v) for v in size_text.split("x"))
        runs = predictors(Path(args.model), work, size, work / "calibration" / "images")
        speed = timings(runs, image, args.repeats, args.calls)
        row = {"network_input": size_text, "speed": speed}
        base = speed["onnxruntime fp32"]
        row["int8_speedup_over_onnxruntime_fp32"] = {
            stage: round(base[stage] / speed["onnxruntime int8"][stage], 2) for stage in base
        }
        row["accuracy"] = {
            name: accuracy(p, work / "held_out", f"{name} {size_text}") for name, p in runs.items()
        }
        row["int8_pq_drop"] = round(
            row["accuracy"]["onnxruntime fp32"]["All_pq"] - row["accuracy"]["onnxruntime int8"]["All_pq"], 2
        )
        print(
            size_text,
            row["int8_speedup_over_onnxruntime_fp32"],
            "PQ drop",
            row["int8_pq_drop"],
            file=sys.stderr,
        )
        results.append(row)
    write_benchmark(
        args.output,
        "int8 Q/DQ ONNX on ONNX Runtime (CPU) vs fp32 ONNX Runtime vs torch: speed and PQ",
        model=Path(args.model).name,
        image_size=args.image_size,
        calibration={"images": args.calibration_num, "seed": args.calibration_seed},
        held_out={"images": args.num, "seed": args.seed},
        timing={"repeats": args.repeats, "calls_per_round": args.calls, "statistic": "median round"},
        results=results,
    )


if __name__ == "__main__":
    main()
