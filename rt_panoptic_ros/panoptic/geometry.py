"""Everything about an image's pixels and the head's grids that depends on sizes alone.

A camera's frames share their sizes, so the index tensors that tie pixels, blocks of pixels
and grid cells together (:mod:`~rt_panoptic_ros.panoptic.sampling`) are computed once per
size and reused by every frame: :func:`image_geometry` is cached, its tensors are read-only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.panoptic.boxes import BOX_MAP_STRIDE
from rt_panoptic_ros.panoptic.sampling import AxisSampling, axis_sampling

#: Stride of the semantic logits (P3).
SEMANTIC_STRIDE = 8
#: Side (in stride-4 cells) of the square tiles the mask computation walks the image by.
TILE = 8


@dataclass(frozen=True)
class ImageGeometry:
    """How an ``H x W`` image reads the stride-4 and stride-8 grids of its network input.

    Blocks are those of the stride-4 sampling (``rows4.blocks x cols4.blocks``, ``R x C``),
    flattened row-major; "cells read" are the ``[hn, wn]`` stride-4 and ``[hn8, wn8]``
    stride-8 cells some pixel reads.

    Attributes:
        rows4, cols4, rows8, cols8: the :class:`AxisSampling` of each axis and grid.
        cells4: ``(hn, wn)``; cells8: ``(hn8, wn8)``.
        block_cells: ``[R * C]`` flat index (in ``[hn, wn]``) of each block's top-left cell.
        block_cells8: ``[R * C]`` flat index (in ``[hn8, wn8]``) of the stride-8 cell whose
            square holds each block's first pixel.
        pixel_count: ``[R * C]`` int64 pixels of each block.
        windows8: ``((first [R], last [R]), (first [C], last [C]))`` stride-8 cells whose
            squares each block's pixels read (rows, then columns).
        squares8: ``[R8 * C8]`` flat index (in ``[hn8, wn8]``) of the top-left cell of each
            block of the stride-8 sampling.
        by_tile: ``[hn * wn]`` the cells read, ordered by ``TILE x TILE`` tile, then row-major;
            tile_of: ``[hn * wn]`` the tile of each, in that order (non-decreasing).
    """

    rows4: AxisSampling
    cols4: AxisSampling
    rows8: AxisSampling
    cols8: AxisSampling
    cells4: tuple[int, int]
    cells8: tuple[int, int]
    block_cells: Tensor
    block_cells8: Tensor
    pixel_count: Tensor
    windows8: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]
    squares8: Tensor
    by_tile: Tensor
    tile_of: Tensor


@functools.lru_cache(maxsize=8)  # a camera's frames share their geometry: computed once
def image_geometry(
    size: tuple[int, int], content: tuple[int, int], grid4: tuple[int, int], grid8: tuple[int, int],
    device: torch.device,
) -> ImageGeometry:  # fmt: skip
    """The geometry of an image of ``size = (H, W)`` pixels shown to the network as ``content =
    (h, w)`` (top-left of the input), whose stride-4 grid is ``grid4`` and stride-8 ``grid8``."""
    (height, width), (hc, wc) = size, content
    rows4 = axis_sampling(height, hc, BOX_MAP_STRIDE, grid4[0], device)
    cols4 = axis_sampling(width, wc, BOX_MAP_STRIDE, grid4[1], device)
    rows8 = axis_sampling(height, hc, SEMANTIC_STRIDE, grid8[0], device)
    cols8 = axis_sampling(width, wc, SEMANTIC_STRIDE, grid8[1], device)
    hn, wn = int(rows4.high[-1]) + 1, int(cols4.high[-1]) + 1
    hn8, wn8 = int(rows8.high[-1]) + 1, int(cols8.high[-1]) + 1
    rows, cols = rows4.blocks, cols4.blocks
    first_rows8, first_cols8 = rows8.low[rows.start], cols8.low[cols.start]
    cells = torch.arange(hn * wn, device=device)
    tiles = (cells // wn // TILE) * ((wn + TILE - 1) // TILE) + cells % wn // TILE
    tile_of, by_tile = torch.sort(tiles, stable=True)  # row-major within a tile
    return ImageGeometry(
        rows4=rows4, cols4=cols4, rows8=rows8, cols8=cols8, cells4=(hn, wn), cells8=(hn8, wn8),
        block_cells=(rows.low[:, None] * wn + cols.low[None, :]).reshape(-1),
        block_cells8=(first_rows8[:, None] * wn8 + first_cols8[None, :]).reshape(-1),
        pixel_count=(rows.length[:, None] * cols.length[None, :]).reshape(-1),
        windows8=((first_rows8, rows8.low[rows.last]), (first_cols8, cols8.low[cols.last])),
        squares8=(rows8.blocks.low[:, None] * wn8 + cols8.blocks.low[None, :]).reshape(-1),
        by_tile=by_tile, tile_of=tile_of,
    )  # fmt: skip
