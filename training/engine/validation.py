"""The scores a training run logs: the model on the validation set, run as the Predictor runs it.

Each image is fitted into the model's input size and padded, and the result read back at the
image's own size, by :mod:`rt_panoptic_ros.image_fit`, the code the Predictor uses; the result
is scored as ``rt-panoptic-eval`` scores the COCO panoptic files ``rt-panoptic-infer`` writes
(:func:`~rt_panoptic_ros.panoptic.coco_format.to_coco_panoptic`, then
:class:`~rt_panoptic_ros.training.evaluation.PanopticEvaluator`). So the PQ logged while
training is the PQ of the Predictor's outputs on the same images (``test/test_train.py``).
"""

from __future__ import annotations

import torch

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.image_fit import decode_fitted, fit_batch
from rt_panoptic_ros.image_io import read_panoptic_png, read_rgb
from rt_panoptic_ros.model import RTPanoNet
from rt_panoptic_ros.panoptic.coco_format import to_coco_panoptic
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.training.data.coco_panoptic import PanopticDataset
from rt_panoptic_ros.training.data.panoptic_format import Segment
from rt_panoptic_ros.training.evaluation import PanopticEvaluator


@torch.no_grad()
def evaluate_model(
    model: RTPanoNet, cfg: Config, dataset: PanopticDataset, count: int, device: torch.device
) -> dict[str, float]:
    """PQ, PQ_th, PQ_st and mIoU (percent) of ``model`` on the first ``count`` images of ``dataset``.

    Args:
        model: in eval mode, on ``device``.
        cfg: the model's config: input size (``input.height x input.width``, 0: each image's
            own) and decoder thresholds.
    """
    evaluator = PanopticEvaluator(dataset.categories)
    target = (cfg.input.height, cfg.input.width)
    void = void_label(cfg.dataset.num_classes)
    for index in range(count):
        image_file, png_file = dataset.files(index)
        image = torch.from_numpy(read_rgb(image_file)).permute(2, 0, 1)  # [3, H, W] uint8
        batch = fit_batch([image.to(device)], target, device)
        result = decode_fitted(model(batch.images), cfg, batch)[0]
        pred_ids, pred_info = to_coco_panoptic(result, cfg, void)
        pred_segments = [Segment(id=s["id"], category_id=s["category_id"]) for s in pred_info]
        gt_ids = read_panoptic_png(png_file)
        evaluator.process(gt_ids, list(dataset.annotations[index].segments), pred_ids, pred_segments)
    results = evaluator.evaluate()
    return {
        "PQ": 100 * results["All"]["pq"], "PQ_th": 100 * results["Things"]["pq"],
        "PQ_st": 100 * results["Stuff"]["pq"], "mIoU": 100 * results["semantic"]["miou"],
    }  # fmt: skip
