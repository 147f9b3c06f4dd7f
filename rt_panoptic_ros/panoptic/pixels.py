"""Decisions pixel by pixel, where the four cells a block of pixels reads disagree.

A block's pixels read the same four stride-4 cells (and a few stride-8 ones); where those agree
on every mask and on the semantic argmax, the block is decided once (convexity of bilinear
reads, :mod:`~rt_panoptic_ros.panoptic.sampling`). Here are the others, the band along
boundaries: their pixels are listed (:func:`mixed_block_pixels`), their semantic argmax is
taken over the bilinear logits of the classes that can win there (:func:`pixel_semantic`),
and their mask memberships come from the bilinear mask probabilities of the queries their
corners disagree on (:func:`mask_pairs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rt_panoptic_ros.panoptic.sampling import AxisBlocks, AxisSampling, bilinear

#: Bits of one membership word (int64 without its sign bit).
_WORD_BITS = 63


def segment_positions(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the ranges ``starts[s] .. starts[s] + counts[s] - 1`` one after the other.

    Returns:
        ``segment [T]`` (which range each element comes from) and ``position [T]``.
    """
    segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    offset = torch.arange(len(segment), device=counts.device) - (torch.cumsum(counts, 0) - counts)[segment]
    return segment, starts[segment] + offset


@dataclass
class CellMasks:
    """The masks M_j on the stride-4 cells an image reads: sparse, and as bit sets per cell.

    Attributes:
        shape: ``(hn, wn)`` cells read by the image's pixels (top-left of the grid).
        ptr: ``[hn * wn + 1]`` cell c's queries are ``queries[ptr[c]:ptr[c + 1]]``.
        queries: ``[E]`` int64 query index of each (cell, query) pair, grouped by cell.
        words: ``[hn, wn, ceil(K / 63)]`` int64: bit j of a cell's words is set when the cell
            is in M_j; equal words mean equal memberships.
        value: ``value(cells, queries)`` -> P_loc * P_sem of each (cell, query) pair
            (elementwise, any cells of the ``[hn, wn]`` grid; 0 where a cell has no box).
    """

    shape: tuple[int, int]
    ptr: Tensor
    queries: Tensor
    words: Tensor
    value: Callable[[Tensor, Tensor], Tensor]

    @classmethod
    def from_pairs(
        cls, cells: Tensor, queries: Tensor, shape: tuple[int, int], num_queries: int,
        value: Callable[[Tensor, Tensor], Tensor],
    ) -> CellMasks:  # fmt: skip
        """From the (cell, query) pairs of M_j, any order, each pair once."""
        num_cells = shape[0] * shape[1]
        order = torch.argsort(cells, stable=True)
        cells, queries = cells[order], queries[order]
        ptr = torch.zeros(num_cells + 1, dtype=torch.long, device=cells.device)
        ptr[1:] = torch.cumsum(torch.bincount(cells, minlength=num_cells), 0)
        num_words = max(1, math.ceil(num_queries / _WORD_BITS))
        words = torch.zeros(num_cells * num_words, dtype=torch.long, device=cells.device)
        # Each pair sets one distinct bit, so adding the bits is or-ing them.
        words.index_add_(
            0, cells * num_words + queries // _WORD_BITS, torch.ones_like(queries) << queries % _WORD_BITS
        )
        return cls(shape, ptr, queries, words.view(*shape, num_words), value)

    @property
    def width(self) -> int:
        return self.shape[1]

    def expand(self, units: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
        """Each unit takes every mask its cell is in: ``(units [E'], queries [E'])`` pairs."""
        counts = self.ptr[cells + 1] - self.ptr[cells]
        some = counts.nonzero().squeeze(1)
        segment, position = segment_positions(self.ptr[cells[some]], counts[some])
        return units[some][segment], self.queries[position]

    def contains(self, cells: Tensor, queries: Tensor) -> Tensor:
        """``[E]`` bool: is cell ``cells[e]`` in mask ``queries[e]``?"""
        words = self.words.view(-1, self.words.shape[-1])[cells, queries // _WORD_BITS]
        return (words >> queries % _WORD_BITS) & 1 == 1


@dataclass
class Pixels:
    """The pixels decided one by one: every pixel of every mixed block, block after block.

    Attributes:
        y, x: ``[P]`` int64 image coordinates.
        block: ``[M]`` flat index ``row_block * C + col_block`` of each mixed block.
        rows, cols: ``[M]`` its row block and column block.
        first, count: ``[M]`` where its pixels start in the list, and how many.
        mask_mixed: ``[M]`` bool, its four stride-4 corners disagree on some mask.
    """

    y: Tensor
    x: Tensor
    block: Tensor
    rows: Tensor
    cols: Tensor
    first: Tensor
    count: Tensor
    mask_mixed: Tensor

    def __len__(self) -> int:
        return len(self.y)


def mixed_block_pixels(mixed: Tensor, mask_mixed: Tensor, rows: AxisBlocks, cols: AxisBlocks) -> Pixels:
    """List the pixels of the blocks flagged in ``mixed [R, C]`` (row-major within a block)."""
    a, b = mixed.nonzero().unbind(1)
    height, width = rows.length[a], cols.length[b]
    count = height * width
    first = torch.cumsum(count, 0) - count
    segment, position = segment_positions(first, count)
    offset = position - first[segment]
    return Pixels(
        y=rows.start[a][segment] + offset // width[segment],
        x=cols.start[b][segment] + offset % width[segment],
        block=a * len(cols) + b, rows=a, cols=b, first=first, count=count, mask_mixed=mask_mixed[a, b],
    )  # fmt: skip


def pixel_semantic(
    logits8: Tensor,
    semantic8: Tensor,
    semantic_mixed: Tensor,
    pixels: Pixels,
    rows8: AxisSampling,
    cols8: AxisSampling,
) -> Tensor:
    """The argmax of the bilinear semantic logits at each listed pixel.

    A pixel between four stride-8 cells that share their argmax takes it (a convex
    combination keeps it first). Elsewhere only classes that can win are read: class d can
    beat class c at some point between the corners only if d's largest corner logit reaches
    c's smallest, so the candidates are those whose largest corner logit reaches
    ``max_c min_corner l_c``; usually two or three of C. Each such square is evaluated densely
    over all the pixels that read it, and the listed pixels look their class up.

    Args:
        logits8: ``[C, h8, w8]``; semantic8: ``[hn8, wn8]`` their argmax on the cells read;
        semantic_mixed: ``[hn8, wn8]`` whether a cell's square has corners of different argmax.

    Returns:
        ``[P]`` int64 class per pixel (ties to the lowest class id, as ``argmax``).
    """
    r, c = rows8.low[pixels.y], cols8.low[pixels.x]
    classes = semantic8[r, c]
    need = semantic_mixed[r, c].nonzero().squeeze(1)
    if len(need) == 0:
        return classes
    hn8, wn8 = semantic_mixed.shape
    squares = torch.full((hn8, wn8), -1, dtype=torch.long, device=classes.device)
    dr, dc = semantic_mixed.nonzero().unbind(1)
    squares[dr, dc] = torch.arange(len(dr), device=classes.device)
    row_first, row_frac = _lines(rows8, hn8)
    col_first, col_frac = _lines(cols8, wn8)
    square_classes = _square_argmax(logits8, (dr, dc), row_frac[dr], col_frac[dc])  # [D, my, mx]
    y, x, r, c = pixels.y[need], pixels.x[need], r[need], c[need]
    my, mx = square_classes.shape[1:]
    flat = (squares[r, c] * my + (y - row_first[r])) * mx + (x - col_first[c])
    classes[need] = square_classes.view(-1)[flat]
    return classes


def _lines(sampling: AxisSampling, lines: int) -> tuple[Tensor, Tensor]:
    """Per grid line: its first reading pixel, and the ``frac`` of each of its pixels (padded).

    Returns:
        ``first [lines]`` and ``frac [lines, m]``, m the most pixels any line has.
    """
    ids = torch.arange(lines, device=sampling.low.device)
    first = torch.searchsorted(sampling.low, ids)
    count = torch.searchsorted(sampling.low, ids, right=True) - first
    width = max(int(count.max()), 1)
    index = (first[:, None] + torch.arange(width, device=ids.device)).clamp_(max=len(sampling.low) - 1)
    return first, sampling.frac[index]


def _square_argmax(logits8: Tensor, squares: tuple[Tensor, Tensor], fy: Tensor, fx: Tensor) -> Tensor:
    """Argmax of the bilinear logits over the pixels of some squares, among their candidates.

    Args:
        squares: ``(rows [D], cols [D])`` top-left cell of each square.
        fy: ``[D, my]`` and fx: ``[D, mx]`` fractions of the pixels reading each square.

    Returns:
        ``[D, my, mx]`` int64 class.
    """
    dr, dc = squares
    dr1, dc1 = (dr + 1).clamp(max=logits8.shape[1] - 1), (dc + 1).clamp(max=logits8.shape[2] - 1)
    corners = torch.stack(
        (logits8[:, dr, dc], logits8[:, dr, dc1], logits8[:, dr1, dc], logits8[:, dr1, dc1])
    ).permute(2, 0, 1)  # [D, 4, C]
    reach = corners.amin(dim=1).amax(dim=1, keepdim=True)  # [D, 1]
    candidate = corners.amax(dim=1) >= reach  # [D, C]
    num_classes = candidate.shape[1]
    width = int(candidate.sum(dim=1).max())
    ids = torch.arange(num_classes, device=dr.device)
    # Candidates first, each group in class order, so that argmax ties go to the lowest id.
    order = torch.sort(torch.where(candidate, ids, ids + num_classes), dim=1).indices[:, :width]  # [D, k]
    valid = candidate.gather(1, order)
    v = corners.gather(2, order[:, None, :].expand(-1, 4, -1))[..., None, None]  # [D, 4, k, 1, 1]
    fy, fx = fy[:, None, :, None], fx[:, None, None, :]  # [D, 1, my, 1], [D, 1, 1, mx]
    value = bilinear(v[:, 0], v[:, 1], v[:, 2], v[:, 3], fy, fx)  # [D, k, my, mx]
    value.masked_fill_(~valid[:, :, None, None], -math.inf)
    # A running maximum over the few candidates (a strict > keeps the lower id on ties);
    # argmax over a middle dimension is many times slower on CPUs.
    best, choice = value[:, 0], torch.zeros_like(value[:, 0], dtype=torch.long)
    for k in range(1, width):
        better = value[:, k] > best
        best = torch.where(better, value[:, k], best)
        choice.masked_fill_(better, k)
    return order.gather(1, choice.flatten(1)).view(choice.shape)


def mask_pairs(
    masks: CellMasks,
    pixels: Pixels,
    block_cells: Tensor,
    blocks: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    mask_thresh: float,
) -> tuple[Tensor, Tensor]:
    """M_j at the listed pixels (Eq. 7 on the bilinear P_loc * P_sem), as (pixel, query) pairs.

    Pixels of a block whose corners agree on every mask take their corners' masks. In the
    other blocks, a mask that holds all four corners holds every pixel, one that holds none
    holds none; only the masks the corners disagree on are read, bilinearly, per pixel.

    Args:
        block_cells: ``[R * C]`` the top-left stride-4 cell of each block (flat in ``[hn, wn]``).
        blocks: the row and column :class:`AxisBlocks`; sampling: the stride-4 row and column
            :class:`AxisSampling` of the image.

    Returns:
        ``pixels [E]`` (indices into the list) and ``queries [E]``.
    """
    rows, cols = blocks
    rows4, cols4 = sampling
    wn = masks.width
    device = pixels.y.device
    agree = (~pixels.mask_mixed).nonzero().squeeze(1)
    segment, position = segment_positions(pixels.first[agree], pixels.count[agree])
    pair_pixels, pair_queries = [], []
    p, q = masks.expand(position, block_cells[pixels.block[agree][segment]])
    pair_pixels.append(p)
    pair_queries.append(q)

    mixed = pixels.mask_mixed.nonzero().squeeze(1)
    a, b = pixels.rows[mixed], pixels.cols[mixed]
    corners = torch.stack(
        (rows.low[a] * wn + cols.low[b], rows.low[a] * wn + cols.high[b],
         rows.high[a] * wn + cols.low[b], rows.high[a] * wn + cols.high[b])
    )  # [4, M']  # fmt: skip
    # Every mask of any corner once: a corner's masks that no earlier corner is in.
    index = torch.arange(len(mixed), device=device)
    blocks_of, queries_of = [], []
    for k in range(4):
        block, query = masks.expand(index, corners[k][index])
        new = torch.ones_like(block, dtype=torch.bool)
        for earlier in range(k):
            new &= ~masks.contains(corners[earlier][block], query)
        blocks_of.append(block[new])
        queries_of.append(query[new])
    block, query = torch.cat(blocks_of), torch.cat(queries_of)
    inside = torch.stack([masks.contains(corners[k][block], query) for k in range(4)]).all(dim=0)
    # Masks that hold all four corners hold every pixel of the block.
    segment, position = segment_positions(
        pixels.first[mixed][block[inside]], pixels.count[mixed][block[inside]]
    )
    pair_pixels.append(position)
    pair_queries.append(query[inside][segment])
    # The others: bilinear P_loc * P_sem per pixel, then the threshold.
    block, query = block[~inside], query[~inside]
    values = torch.stack([masks.value(corners[k][block], query) for k in range(4)])  # [4, E]
    segment, position = segment_positions(pixels.first[mixed][block], pixels.count[mixed][block])
    fy, fx = rows4.frac[pixels.y[position]], cols4.frac[pixels.x[position]]
    v = values[:, segment]
    hit = bilinear(v[0], v[1], v[2], v[3], fy, fx) > mask_thresh
    pair_pixels.append(position[hit])
    pair_queries.append(query[segment][hit])
    return torch.cat(pair_pixels), torch.cat(pair_queries)
