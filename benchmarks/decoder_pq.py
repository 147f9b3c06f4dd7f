"""Accuracy of the decoders on the same head outputs: per-cell decisions vs full resolution.

usage: python benchmarks/decoder_pq.py [--model models/small_synthetic.pt] [--num 100] [--seed 7]
           [--val-num 30] [--val-seed 1] [--sizes 256x512 512x1024] [--baseline REV]
           [--output benchmarks/decoder_pq.json]

Writes synthetic street scenes (``rt-panoptic-synth``'s generator) at each image size, runs
the model once per image (the Predictor's own resize to the model's input size, 128x256 for
the bundled model) and decodes the same head outputs with:

- ``cell``: the package's decoder at ``--baseline`` (decisions per stride-4 cell, then the
  decided maps nearest-resized to the image, as the Predictor did);
- ``full``: this tree's decoder (every decision at the image's pixels, bilinear reads);
- ``reference``: the dense reference decoder of the tests (must equal ``full``).

Then scores PQ / SQ / RQ (all, things, stuff) and mIoU with the project's evaluator. On the
validation split (``--val-seed``) it first picks ``decoder.instance_score_thresh`` and
``decoder.box_map_background`` by PQ; the held-out split (``--seed``) reports every decoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decoder import CELL_DECODER_REVISION, load_baseline  # noqa: E402
from reference_decoder import reference_decode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rt_panoptic_ros import Predictor  # noqa: E402
from rt_panoptic_ros.image_io import read_panoptic_png, read_rgb  # noqa: E402
from rt_panoptic_ros.panoptic import decode  # noqa: E402
from rt_panoptic_ros.panoptic.coco_format import to_coco_panoptic  # noqa: E402
from rt_panoptic_ros.panoptic.fusion import void_label  # noqa: E402
from rt_panoptic_ros.runtime.machine import write_benchmark  # noqa: E402
from rt_panoptic_ros.training.data.panoptic_format import Segment, load_panoptic_json  # noqa: E402
from rt_panoptic_ros.training.data.synthetic import write_dataset  # noqa: E402
from rt_panoptic_ros.training.evaluation import PanopticEvaluator  # noqa: E402

SCORE_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def head_outputs(predictor: Predictor, folder: Path):
    """Per image: its ground truth and the network's head outputs (computed once)."""
    gt = load_panoptic_json(folder / "panoptic.json", ground_truth=True)
    items = []
    for ann in tqdm(gt.annotations, desc=f"network on {folder.name}", unit="image"):
        image = read_rgb(folder / "images" / ann.file_name)
        batch = predictor.upload([image])
        with torch.no_grad():
            outputs = predictor.infer(batch.images)
        gt_ids = read_panoptic_png(folder / "panoptic" / ann.file_name)
        items.append((gt_ids, ann.segments, outputs, batch.content_sizes[0], batch.original_sizes[0]))
    return gt.categories, items


def score(categories, items, decoder) -> dict:
    """PQ etc. (percent) of ``decoder(outputs, content, original) -> PanopticResult``."""
    evaluator = PanopticEvaluator(categories)
    for gt_ids, gt_segments, outputs, content, original in items:
        result = decoder(outputs, content, original)
        cfg = decoder.cfg
        pred_ids, info = to_coco_panoptic(result, cfg, void_label(cfg.dataset.num_classes))
        pred_segments = [Segment(id=s["id"], category_id=s["category_id"]) for s in info]
        evaluator.process(gt_ids, gt_segments, pred_ids, pred_segments)
    r = evaluator.evaluate()
    out = {
        f"{k}_{m}": round(100 * r[k][m], 2) for k in ("All", "Things", "Stuff") for m in ("pq", "sq", "rq")
    }
    out["miou"] = round(100 * r["semantic"]["miou"], 2)
    names = {c.id: c.name for c in categories}
    out["per_class_pq"] = {names[c]: round(100 * v["pq"], 1) for c, v in r["per_class"].items()}
    return out


def decoders(cfg, baseline_decode, baseline_resize):
    """The three decoders as callables carrying their config."""

    def cell(outputs, content, original):
        result = baseline_decode(outputs, cfg, content)[0]
        return baseline_resize(result, original) if tuple(result.semantic.shape) != original else result

    def full(outputs, content, original):
        return decode(outputs, cell.cfg, content, original)[0]

    def reference(outputs, content, original):
        return reference_decode(outputs, cell.cfg, content, original)[0]

    for f in (cell, full, reference):
        f.cfg = cfg
    return cell, full, reference


def with_decoder(cfg, **changes):
    return dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--val-num", type=int, default=30)
    parser.add_argument("--val-seed", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"])
    parser.add_argument("--baseline", default=CELL_DECODER_REVISION)
    parser.add_argument("--output", default=str(Path(__file__).with_name("decoder_pq.json")))
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    baseline_decode = load_baseline(args.baseline)
    from baseline_panoptic.result import resize_result  # the old Predictor's nearest resize

    predictor = Predictor(args.model)
    base_cfg = predictor.cfg
    work = Path(tempfile.mkdtemp(prefix="decoder_pq_"))

    # Validation split at the first size: choose the new decoder fields by PQ.
    height, width = (int(v) for v in args.sizes[0].split("x"))
    val = work / "val"
    write_dataset(val, args.val_num, seed=args.val_seed, height=height, width=width)
    categories, items = head_outputs(predictor, val)
    selection = []
    for background in ("exclude", "tri"):
        for thresh in SCORE_THRESHOLDS:
            cfg = with_decoder(base_cfg, box_map_background=background, instance_score_thresh=thresh)
            pq = score(categories, items, decoders(cfg, baseline_decode, resize_result)[1])["All_pq"]
            selection.append({"box_map_background": background, "instance_score_thresh": thresh, "pq": pq})
            print(json.dumps(selection[-1]), file=sys.stderr)
    best = max(selection, key=lambda r: r["pq"])
    chosen = with_decoder(
        base_cfg,
        box_map_background=best["box_map_background"],
        instance_score_thresh=best["instance_score_thresh"],
    )

    held_out = []
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        folder = work / f"heldout_{size}"
        write_dataset(folder, args.num, seed=args.seed, height=height, width=width)
        categories, items = head_outputs(predictor, folder)
        for label, cfg in (("model defaults", base_cfg), ("chosen on validation", chosen)):
            cell, full, reference = decoders(cfg, baseline_decode, resize_result)
            row = {"image_size": size, "network_input": f"{base_cfg.input.height}x{base_cfg.input.width}",
                   "decoder_config": label,
                   "instance_score_thresh": cfg.decoder.instance_score_thresh,
                   "box_map_background": cfg.decoder.box_map_background}  # fmt: skip
            for name, f in (("cell", cell), ("full", full), ("reference", reference)):
                row[name] = score(categories, items, f)
                summary = {k: v for k, v in row[name].items() if k != "per_class_pq"}
                print(size, label, name, json.dumps(summary), file=sys.stderr)
            held_out.append(row)
    write_benchmark(
        args.output,
        "PQ of the panoptic decoders on the same head outputs (synthetic scenes, bundled model)",
        model=Path(args.model).name,
        validation={"seed": args.val_seed, "images": args.val_num, "size": args.sizes[0], "grid": selection,
                    "chosen": best},
        held_out={"seed": args.seed, "images": args.num, "results": held_out},
        baseline_revision=args.baseline,
    )  # fmt: skip
    np.save(work / "done.npy", np.zeros(1))


if __name__ == "__main__":
    main()
