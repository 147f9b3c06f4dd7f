"""The overlay's colouring and blend in torch ops, on the device the id maps are on (CUDA).

The picture is the host's (:mod:`.host_blend`), byte for byte: each output byte is read from a
table of ``cv2.addWeighted`` results, so the device's float arithmetic never decides a value.
torch is imported only when this runs.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def blend_on_device(
    rgb: np.ndarray, semantic: Any, instance: Any, table: np.ndarray, num_classes: int, alpha: float
) -> np.ndarray:
    """The colouring and blend of :func:`.host_blend.blend_on_host` in torch ops on
    ``semantic``'s device: the image goes up once, one uint8 image comes back.

    The id maps are shrunk to ``rgb``'s size by ``cv2.resize``'s nearest-neighbour rule, and
    each output byte is read from :func:`_blend_table` (``cv2.addWeighted`` of every image
    value with every id's colour), so the picture is the host's, byte for byte, whatever the
    device's float arithmetic.
    """
    import torch

    device = semantic.device
    num_segments = len(table) - num_classes
    void_id = len(table)
    instance = torch.as_tensor(instance, device=device)
    height, width = rgb.shape[:2]
    if tuple(semantic.shape) != (height, width):
        rows = torch.from_numpy(_nearest(semantic.shape[0], height)).to(device)
        cols = torch.from_numpy(_nearest(semantic.shape[1], width)).to(device)
        semantic = semantic.index_select(0, rows).index_select(1, cols)
        instance = instance.index_select(0, rows).index_select(1, cols)
    semantic, instance = semantic.to(torch.int64), instance.to(torch.int64)  # [h, w]
    labelled = (semantic >= 0) & (semantic < num_classes)
    thing = labelled & (instance > 0) & (instance <= num_segments)
    ids = torch.where(labelled, semantic, void_id)
    ids = torch.where(thing, instance + (num_classes - 1), ids)
    blend = torch.from_numpy(_blend_table(table, alpha)).to(device).reshape(-1)  # [(N + 1) * 3 * 256]
    image = torch.from_numpy(rgb).to(device).to(torch.int64)  # [h, w, 3]
    channel = torch.arange(3, device=device) * 256
    index = (ids[..., None] * 768 + channel) + image  # [h, w, 3] into [id, channel, value]
    return blend[index].cpu().numpy()


def _blend_table(table: np.ndarray, alpha: float) -> np.ndarray:
    """``[N + 1, 3, 256]`` uint8: ``cv2.addWeighted`` of image value v (weight ``1 - alpha``)
    with channel c of colour ``table[id]`` (weight ``alpha``) at ``[id, c, v]``; the last id
    is void, where the value stays. Rows of 256 bytes: OpenCV's vector code does every entry."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (len(table), 3, 256))
    colours = np.broadcast_to(table[:, :, None], (len(table), 3, 256))
    blended = cv2.addWeighted(
        np.ascontiguousarray(values).reshape(-1, 256), 1.0 - alpha,
        np.ascontiguousarray(colours).reshape(-1, 256), alpha, 0.0,
    ).reshape(len(table), 3, 256)  # fmt: skip
    return np.concatenate([blended, values[:1]])


def _nearest(source: int, target: int) -> np.ndarray:
    """``cv2.resize``'s ``INTER_NEAREST`` source index of each of ``target`` outputs (int64)."""
    step = 1.0 / (target / source)
    return np.minimum(np.floor(np.arange(target) * step), source - 1).astype(np.int64)
