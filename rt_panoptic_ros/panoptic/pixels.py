"""Decisions pixel by pixel, in the band of blocks whose corners disagree.

A block's pixels read the same four stride-4 cells; where those agree on every mask and the
stride-8 cells its pixels read agree on the semantic argmax, the block is decided once
(convexity of bilinear reads, :mod:`~rt_panoptic_ros.panoptic.sampling`). The rest is the
band along boundaries, handled here without per-pixel Python or per-pixel gathers where it
can be: rectangles of the same shape are evaluated together as dense ``[n, h, w]`` tensors.

- :class:`CellMasks`: the masks M_j on the stride-4 cells, sparse and as bit sets;
- :func:`band_mask_pairs`: M_j at the pixels of blocks whose corners disagree on a mask;
- :func:`band_semantic`: the semantic argmax at the pixels of blocks whose stride-8 cells
  disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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
        bits = torch.ones_like(queries) << queries % _WORD_BITS
        words.index_add_(0, cells * num_words + queries // _WORD_BITS, bits)
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
class Rectangles:
    """Rectangles of pixels (blocks, squares), enumerated group by group of equal shape.

    Pixel ``t`` of the enumeration is ``(y0 + dy, x0 + dx)`` of its rectangle, row-major, the
    rectangles of one shape one after the other (:meth:`groups`), so that work on them is
    dense ``[n, h, w]`` tensors.

    Attributes:
        y0, x0, height, width: ``[M]`` int64 each rectangle's top-left pixel and size.
        first: ``[M]`` where its pixels start in the enumeration.
        total: pixels in all.
    """

    y0: Tensor
    x0: Tensor
    height: Tensor
    width: Tensor
    first: Tensor
    total: int = 0
    _pixels: tuple[Tensor, Tensor] | None = None

    @classmethod
    def of(cls, y0: Tensor, x0: Tensor, height: Tensor, width: Tensor) -> Rectangles:
        first = torch.zeros_like(y0)
        rectangles = cls(y0, x0, height, width, first)
        count = 0
        for h, w, members in rectangles.groups():
            first[members] = count + torch.arange(len(members), device=y0.device) * (h * w)
            count += len(members) * h * w
        rectangles.total = count
        return rectangles

    def __len__(self) -> int:
        return len(self.y0)

    def groups(self) -> Iterator[tuple[int, int, Tensor]]:
        """``(h, w, members)`` for every shape present (a few: blocks are nearly regular)."""
        if len(self.y0) == 0:
            return
        span = int(self.width.max()) + 1
        shapes, inverse = torch.unique(self.height * span + self.width, return_inverse=True)
        for k, shape in enumerate(shapes.tolist()):
            yield shape // span, shape % span, (inverse == k).nonzero().squeeze(1)

    def pixels(self) -> tuple[Tensor, Tensor]:
        """``y [T]``, ``x [T]`` of every pixel, in enumeration order (computed once)."""
        if self._pixels is None:
            self._pixels = self._enumerate()
        return self._pixels

    def _enumerate(self) -> tuple[Tensor, Tensor]:
        ys, xs = [], []
        for h, w, members in self.groups():
            dy = torch.arange(h, device=self.y0.device)
            dx = torch.arange(w, device=self.y0.device)
            ys.append((self.y0[members][:, None, None] + dy[None, :, None]).expand(-1, h, w).reshape(-1))
            xs.append((self.x0[members][:, None, None] + dx[None, None, :]).expand(-1, h, w).reshape(-1))
        empty = self.y0.new_zeros(0)
        return (torch.cat(ys), torch.cat(xs)) if ys else (empty, empty)


def block_rectangles(flags: Tensor, rows: AxisBlocks, cols: AxisBlocks) -> tuple[Tensor, Rectangles]:
    """The blocks flagged in ``flags [R, C]``: their flat indices ``[M]`` and their pixels."""
    a, b = flags.nonzero().unbind(1)
    return a * len(cols) + b, Rectangles.of(rows.start[a], cols.start[b], rows.length[a], cols.length[b])


def band_mask_pairs(
    masks: CellMasks,
    blocks: Tensor,
    rectangles: Rectangles,
    axes: tuple[AxisBlocks, AxisBlocks],
    sampling: tuple[AxisSampling, AxisSampling],
    mask_thresh: float,
) -> tuple[Tensor, Tensor]:
    """M_j at the pixels of blocks whose corners disagree on a mask (Eq. 7, bilinear P_loc * P_sem).

    A mask that holds all four corners holds every pixel of the block, one that holds none
    holds none; only the masks the corners disagree on are read, bilinearly, per pixel.

    Args:
        blocks: ``[M]`` flat block indices ``row_block * C + col_block``; rectangles: their pixels.
        axes: the row and column :class:`AxisBlocks`; sampling: the stride-4 row and column
            :class:`AxisSampling` of the image.

    Returns:
        ``pixels [E]`` (indices into the rectangles' enumeration) and ``queries [E]``.
    """
    rows, cols = axes
    rows4, cols4 = sampling
    a, b = blocks // len(cols), blocks % len(cols)
    wn = masks.width
    corners = torch.stack(
        (rows.low[a] * wn + cols.low[b], rows.low[a] * wn + cols.high[b],
         rows.high[a] * wn + cols.low[b], rows.high[a] * wn + cols.high[b])
    )  # [4, M]  # fmt: skip
    # Every mask of any corner once: a corner's masks that no earlier corner is in.
    index = torch.arange(len(blocks), device=blocks.device)
    found_blocks, found_queries = [], []
    for k in range(4):
        block, query = masks.expand(index, corners[k])
        new = torch.ones_like(block, dtype=torch.bool)
        for earlier in range(k):
            new &= ~masks.contains(corners[earlier][block], query)
        found_blocks.append(block[new])
        found_queries.append(query[new])
    block, query = torch.cat(found_blocks), torch.cat(found_queries)
    corner_cells, corner_queries = corners[:, block].reshape(-1), query.repeat(4)
    inside = masks.contains(corner_cells, corner_queries).view(4, -1).all(dim=0)
    values = masks.value(corner_cells, corner_queries).view(4, -1)  # [4, E]

    pixels, queries = [], []
    for h, w, members in rectangles.groups():
        in_group = torch.zeros(len(blocks), dtype=torch.bool, device=blocks.device)
        in_group[members] = True
        here = in_group[block].nonzero().squeeze(1)
        e_block, e_query, e_inside = block[here], query[here], inside[here]
        v = values[:, here, None, None]  # [4, E, 1, 1]
        fy = rows4.frac[rectangles.y0[e_block][:, None] + torch.arange(h, device=block.device)][:, :, None]
        fx = cols4.frac[rectangles.x0[e_block][:, None] + torch.arange(w, device=block.device)][:, None, :]
        hit = bilinear(v[0], v[1], v[2], v[3], fy, fx) > mask_thresh  # [E, h, w]
        hit |= e_inside[:, None, None]
        e, offset = hit.view(len(here), h * w).nonzero().unbind(1)
        pixels.append(rectangles.first[e_block[e]] + offset)
        queries.append(e_query[e])
    empty = blocks.new_zeros(0)
    return (torch.cat(pixels), torch.cat(queries)) if pixels else (empty, empty)


def band_semantic(
    logits8: Tensor,
    semantic8: Tensor,
    semantic_mixed: Tensor,
    rectangles: Rectangles,
    sampling: tuple[AxisSampling, AxisSampling],
) -> Tensor:
    """The argmax of the bilinear semantic logits at every pixel of some blocks.

    A block's pixels read at most two stride-8 lines per axis (a stride-4 block spans half a
    stride-8 cell), so each block is cut into at most four parts that read one square each.
    A part whose square's corners share their argmax takes it (a convex combination keeps it
    first); the others are evaluated densely, part shape by part shape.

    Args:
        logits8: ``[C, h8, w8]``; semantic8: ``[hn8, wn8]`` their argmax on the cells read;
        semantic_mixed: ``[hn8, wn8]`` whether a cell's square has corners of different argmax.
        rectangles: the blocks; sampling: the stride-8 row and column :class:`AxisSampling`.

    Returns:
        ``[T]`` int64 class per pixel, in the rectangles' enumeration order.
    """
    rows8, cols8 = sampling
    out = torch.empty(rectangles.total, dtype=torch.long, device=semantic8.device)
    if rectangles.total == 0:
        return out
    row_first, _ = _reading_pixels(rows8, semantic_mixed.shape[0])
    col_first, _ = _reading_pixels(cols8, semantic_mixed.shape[1])
    r = rectangles
    # Where each block's rows (columns) switch to their second stride-8 line, if they do.
    row_cut = row_first[rows8.low[r.y0 + r.height - 1]].clamp(min=r.y0) - r.y0  # rows in the first part
    col_cut = col_first[cols8.low[r.x0 + r.width - 1]].clamp(min=r.x0) - r.x0
    parts = []
    for dy0, dh in ((torch.zeros_like(row_cut), torch.where(row_cut > 0, row_cut, r.height)),
                    (row_cut, torch.where(row_cut > 0, r.height - row_cut, 0))):  # fmt: skip
        for dx0, dw in ((torch.zeros_like(col_cut), torch.where(col_cut > 0, col_cut, r.width)),
                        (col_cut, torch.where(col_cut > 0, r.width - col_cut, 0))):  # fmt: skip
            keep = ((dh > 0) & (dw > 0)).nonzero().squeeze(1)
            parts.append((keep, dy0[keep], dx0[keep], dh[keep], dw[keep]))
    parent = torch.cat([p[0] for p in parts])
    dy0, dx0, dh, dw = (torch.cat([p[k] for p in parts]) for k in range(1, 5))
    pieces = Rectangles.of(r.y0[parent] + dy0, r.x0[parent] + dx0, dh, dw)
    for h, w, members in pieces.groups():
        y = pieces.y0[members][:, None] + torch.arange(h, device=out.device)  # [n, h]
        x = pieces.x0[members][:, None] + torch.arange(w, device=out.device)  # [n, w]
        dr, dc = rows8.low[y[:, 0]], cols8.low[x[:, 0]]
        found = semantic8[dr, dc][:, None, None].expand(-1, h, w).clone()  # [n, h, w]
        mixed = semantic_mixed[dr, dc].nonzero().squeeze(1)
        if len(mixed):
            found[mixed] = _square_argmax(
                logits8, (dr[mixed], dc[mixed]), rows8.frac[y[mixed]], cols8.frac[x[mixed]]
            )
        owner = parent[members]
        index = (
            r.first[owner][:, None, None]
            + (y - r.y0[owner][:, None])[:, :, None] * r.width[owner][:, None, None]
            + (x - r.x0[owner][:, None])[:, None, :]
        )  # [n, h, w] positions in the blocks' enumeration
        out[index.reshape(-1)] = found.reshape(-1)
    return out


def _reading_pixels(sampling: AxisSampling, lines: int) -> tuple[Tensor, Tensor]:
    """Per grid line, the first pixel that reads it as its ``low`` line, and how many do."""
    ids = torch.arange(lines, device=sampling.low.device)
    first = torch.searchsorted(sampling.low, ids)
    return first, torch.searchsorted(sampling.low, ids, right=True) - first


def _square_argmax(logits8: Tensor, squares: tuple[Tensor, Tensor], fy: Tensor, fx: Tensor) -> Tensor:
    """Argmax of the bilinear logits over the pixels of some squares, among their candidates.

    Class d can beat class c somewhere between the four corners only if d's largest corner
    logit reaches c's smallest, so the candidates are the classes whose largest corner logit
    reaches ``max_c min_corner l_c``: usually two or three of C.

    Args:
        squares: ``(rows [n], cols [n])`` top-left cell of each square.
        fy: ``[n, h]`` and fx: ``[n, w]`` fractions of the pixels reading each square.

    Returns:
        ``[n, h, w]`` int64 class (ties to the lowest class id, as ``argmax``).
    """
    dr, dc = squares
    dr1, dc1 = (dr + 1).clamp(max=logits8.shape[1] - 1), (dc + 1).clamp(max=logits8.shape[2] - 1)
    corners = torch.stack(
        (logits8[:, dr, dc], logits8[:, dr, dc1], logits8[:, dr1, dc], logits8[:, dr1, dc1])
    ).permute(2, 0, 1)  # [n, 4, C]
    reach = corners.amin(dim=1).amax(dim=1, keepdim=True)  # [n, 1]
    candidate = corners.amax(dim=1) >= reach  # [n, C]
    num_classes = candidate.shape[1]
    width = int(candidate.sum(dim=1).max())
    ids = torch.arange(num_classes, device=dr.device)
    # Candidates first, each group in class order, so that ties go to the lowest id.
    order = torch.sort(torch.where(candidate, ids, ids + num_classes), dim=1).indices[:, :width]  # [n, k]
    valid = candidate.gather(1, order)
    v = corners.gather(2, order[:, None, :].expand(-1, 4, -1))[..., None, None]  # [n, 4, k, 1, 1]
    value = bilinear(v[:, 0], v[:, 1], v[:, 2], v[:, 3], fy[:, None, :, None], fx[:, None, None, :])
    value.masked_fill_(~valid[:, :, None, None], -math.inf)  # [n, k, h, w]
    # A running maximum over the few candidates (a strict > keeps the lower id on ties);
    # argmax over a middle dimension is many times slower on CPUs.
    best, choice = value[:, 0], torch.zeros_like(value[:, 0], dtype=torch.long)
    for k in range(1, width):
        better = value[:, k] > best
        best = torch.where(better, value[:, k], best)
        choice.masked_fill_(better, k)
    return order.gather(1, choice.flatten(1)).view(choice.shape)
