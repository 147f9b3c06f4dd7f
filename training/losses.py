"""The losses of the paper (Sec. 4.2-4.3, Eq. 11-19), each a named scalar.

:func:`panoptic_losses` returns ``{"box_reg", "centerness", "box_cls", "levelness",
"semantic", "mask"}``; the total of Eq. 19 is :func:`total_loss`. Per-location sums are
normalised by ``max(1, N_fg)``, the number of foreground locations in the batch (Eq. 11-12;
the focal loss as FCOS), so an image without things gives finite losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, sigmoid_focal_loss

from rt_panoptic_ros.config import DecoderConfig, setting
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.panoptic.boxes import dense_boxes_at, pixel_query_iou
from rt_panoptic_ros.panoptic.masks import select_queries
from rt_panoptic_ros.training.targets import IGNORE_LABEL, Targets

LOSS_NAMES: tuple[str, ...] = ("box_reg", "centerness", "box_cls", "levelness", "semantic", "mask")


@dataclass(frozen=True)
class LossConfig:
    """Weights and constants of the losses (Eq. 11-19)."""

    semantic_weight: float = setting(1.0, "λ of Eq. 19 (1 for Cityscapes, 0.4 for COCO)", low=0.0)
    bootstrap_fraction: float = setting(
        0.3, "the semantic loss keeps the worst this fraction of pixels", low=0.0, high=1.0
    )
    focal_alpha: float = setting(0.25, "α of the box-class focal loss (RetinaNet)", low=0.0, high=1.0)
    focal_gamma: float = setting(2.0, "γ of the box-class focal loss (RetinaNet)", low=0.0)
    mask_loss: bool = setting(True, "the explicit mask loss (Eq. 16-18); off in the weakly supervised mode")


def iou_loss(pred_ltrb: Tensor, target_ltrb: Tensor) -> Tensor:
    """``-log((I + 1) / (U + 1))`` of boxes given as distances from the same point (UnitBox, FCOS).

    Args:
        pred_ltrb, target_ltrb: ``[M, 4]`` non-negative l, t, r, b.

    Returns:
        ``[M]`` losses, 0 for a perfect box.
    """
    pred_area = (pred_ltrb[:, 0] + pred_ltrb[:, 2]) * (pred_ltrb[:, 1] + pred_ltrb[:, 3])
    target_area = (target_ltrb[:, 0] + target_ltrb[:, 2]) * (target_ltrb[:, 1] + target_ltrb[:, 3])
    w = torch.minimum(pred_ltrb[:, 0], target_ltrb[:, 0]) + torch.minimum(pred_ltrb[:, 2], target_ltrb[:, 2])
    h = torch.minimum(pred_ltrb[:, 1], target_ltrb[:, 1]) + torch.minimum(pred_ltrb[:, 3], target_ltrb[:, 3])
    inter = w * h
    union = pred_area + target_area - inter
    return -torch.log((inter + 1.0) / (union + 1.0))


def bootstrapped_cross_entropy(logits: Tensor, labels: Tensor, fraction: float) -> Tensor:
    """Cross-entropy over the worst ``fraction`` of the labelled pixels (Eq. 15, bootstrapped).

    Args:
        logits: ``[N, C, h, w]``; labels: ``[N, H, W]`` int64, :data:`IGNORE_LABEL` ignored.
            The logits are upsampled bilinearly to the labels' size when they differ.

    Returns:
        Scalar mean of the ``ceil(fraction * labelled pixels)`` largest pixel losses (0 when
        nothing is labelled).
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="none").flatten()
    labelled = (labels != IGNORE_LABEL).flatten()
    count = int(labelled.sum())
    if count == 0:
        return logits.sum() * 0.0
    k = max(1, round(fraction * count))
    # Ignored pixels have loss 0 and sort last, so the top k are all labelled pixels.
    return pixel_losses.topk(k, sorted=False).values.mean()


def mask_loss(outputs: HeadOutputs, targets: Targets, image_sizes: Tensor, decoder: DecoderConfig) -> Tensor:
    """The explicit mask loss (Eq. 16-18).

    Queries b_j are the detached predicted boxes after NMS (Eq. 4, the decoder's own
    :func:`~rt_panoptic_ros.panoptic.masks.select_queries`). Each is matched to the
    ground-truth box of its image it overlaps most; β_j is that IoU. Over the stride-4 cells
    whose predicted levelness picks a box (Eq. 14; the others never enter a mask),
    ``E_FP = sum IoU(B(x,y), b_j)`` outside M_j^t and ``E_FN = sum (1 - IoU)`` inside it, and
    ``L = 1/|queries| sum_j β_j / N_j (E_FP + E_FN)`` with N_j the cells of M_j^t. Gradients
    flow into the dense box map B(x, y) only.

    Returns:
        Scalar (0 with a graph when there is no query or no instance).
    """
    zero = sum(r.sum() for r in outputs.box_reg) * 0.0
    instances = targets.instances
    if len(instances.boxes) == 0:
        return zero
    with torch.no_grad():
        sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
        queries = select_queries(
            [c.detach().float() for c in outputs.box_cls], [r.detach().float() for r in outputs.box_reg],
            [o.detach().float() for o in outputs.centerness], sizes, decoder,
        )  # fmt: skip
        levels = outputs.levelness_logits.detach().argmax(dim=1)  # [N, h4, w4] Eq. 14
    n, h4, w4 = levels.shape
    mask_cells = torch.bincount(targets.mask_instance.flatten() + 1, minlength=len(instances.boxes) + 1)[1:]
    total, count = zero, 0
    for i in range(n):  # images differ in query and pixel counts; the batch per device is small
        q_boxes = queries.boxes[queries.image == i]  # [Q, 4]
        gt = torch.nonzero((instances.image == i) & ~instances.iscrowd).squeeze(1)  # [G]
        if len(q_boxes) == 0 or len(gt) == 0:
            continue
        overlap = box_iou(q_boxes, instances.boxes[gt])  # [Q, G]
        beta, match = overlap.max(dim=1)  # [Q]
        cells = torch.nonzero(levels[i].flatten() > 0).squeeze(1)  # [P]
        count += len(q_boxes)
        if len(cells) == 0:
            continue
        pixel_boxes = dense_boxes_at(
            [r[i].float() for r in outputs.box_reg],
            cells // w4,
            cells % w4,
            levels[i].flatten()[cells],
            (h4, w4),
        )  # [P, 4]
        iou = pixel_query_iou(pixel_boxes, q_boxes)  # [P, Q]
        in_mask = targets.mask_instance[i].flatten()[cells][:, None] == gt[match][None]  # [P, Q]
        errors = torch.where(in_mask, 1.0 - iou, iou).sum(dim=0)  # E_FP + E_FN over these cells
        # Mask cells that the levelness left out are false negatives with IoU 0: 1 each, no gradient.
        missed = mask_cells[gt[match]] - in_mask.sum(dim=0)
        n_j = mask_cells[gt[match]].clamp(min=1)
        total = total + (beta / n_j * (errors + missed)).sum()
    return total / max(1, count)


def panoptic_losses(
    outputs: HeadOutputs, targets: Targets, image_sizes: Tensor, cfg: LossConfig, decoder: DecoderConfig
) -> dict[str, Tensor]:
    """The six loss terms of Eq. 19, unweighted.

    Args:
        outputs: the head's raw outputs for the batch (``semantic_logits [N,C,H/8,W/8]``, ...).
        targets: :func:`~rt_panoptic_ros.training.targets.build_targets` of the batch.
        image_sizes: ``[N, 2]`` ``(H, W)`` of each image's content.
        cfg: loss constants; decoder: the thresholds queries of the mask loss are chosen with.

    Returns:
        Named scalars: ``box_reg`` (Eq. 11), ``centerness`` (Eq. 12), ``box_cls`` (focal),
        ``levelness`` (Eq. 13), ``semantic`` (Eq. 15, bootstrapped), ``mask`` (Eq. 16).
    """
    t = targets.levels
    # Flatten all levels to [N, P, .] in the targets' order (level by level, row-major).
    cls = torch.cat([c.flatten(2) for c in outputs.box_cls], dim=2).transpose(1, 2)  # [N, P, C_th]
    reg = torch.cat([r.flatten(2) for r in outputs.box_reg], dim=2).transpose(1, 2)  # [N, P, 4]
    ctr = torch.cat([o.flatten(2) for o in outputs.centerness], dim=2)[:, 0]  # [N, P]
    foreground = t.foreground  # [N, P]
    num_pos = float(foreground.sum())
    norm = max(1.0, num_pos)

    counted = t.labels != -2  # crowd regions and padding take no part
    one_hot = F.one_hot(t.labels.clamp(min=0), cls.shape[-1]).to(cls.dtype) * foreground[..., None]
    box_cls = sigmoid_focal_loss(
        cls[counted].float(), one_hot[counted].float(), alpha=cfg.focal_alpha, gamma=cfg.focal_gamma,
        reduction="sum",
    ) / norm  # fmt: skip

    box_reg = iou_loss(reg[foreground].float(), t.ltrb[foreground]).sum() / norm
    centerness = (
        F.binary_cross_entropy_with_logits(ctr[foreground].float(), t.centerness[foreground], reduction="sum")
        / norm
    )
    levelness = F.cross_entropy(
        outputs.levelness_logits.float(), targets.levelness, ignore_index=IGNORE_LABEL
    )
    if not (targets.levelness != IGNORE_LABEL).any():
        levelness = outputs.levelness_logits.sum() * 0.0
    semantic = bootstrapped_cross_entropy(
        outputs.semantic_logits.float(), targets.semantic, cfg.bootstrap_fraction
    )
    losses = {
        "box_reg": box_reg,
        "centerness": centerness,
        "box_cls": box_cls,
        "levelness": levelness,
        "semantic": semantic,
    }
    if cfg.mask_loss:
        losses["mask"] = mask_loss(outputs, targets, image_sizes, decoder)
    else:
        losses["mask"] = outputs.box_reg[0].sum() * 0.0
    return losses


def total_loss(losses: dict[str, Tensor], cfg: LossConfig) -> Tensor:
    """Eq. 19: the sum of the terms, the semantic one weighted by λ."""
    return sum(
        (cfg.semantic_weight * value if name == "semantic" else value) for name, value in losses.items()
    )  # type: ignore[return-value]
