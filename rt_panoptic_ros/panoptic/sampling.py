"""Reading the head's coarse grids at the image's own pixels, bilinearly, as the original does.

The head predicts on grids over the network input: stride 4 (levelness, the dense box map and
so the mask probabilities P_loc * P_sem, Eq. 5-7) and stride 8 (semantic logits). The image
of ``H x W`` pixels sits, resized to ``h x w``, in the input's top-left corner. The original
implementation upsamples the mask probabilities and the semantic logits bilinearly
(``F.interpolate``, ``align_corners=False``) and only then thresholds / takes the argmax; so
does this decoder, through the resize of the image as well, with one bilinear read per pixel:

    u(X) = (X + 0.5) * (w / W) / stride - 0.5, clamped to [0, n - 1]    (per axis)

the pixel centre carried through the resize onto the grid, ``F.interpolate``'s convention
(with no resize and stride 4 it is exactly the original's x4 upsampling). A pixel reads grid
lines ``low = floor(u)`` and ``high = min(low + 1, n - 1)`` with weight ``frac = u - low`` on
``high``, and a value ``(1 - fy) * ((1 - fx) v00 + fx v01) + fy * ((1 - fx) v10 + fx v11)``.

Why only a few pixels need this work: a bilinear value is a convex combination of its four
grid corners, so where all four corners are above (or all below) a threshold, or share their
argmax, every pixel between them decides the same. :class:`AxisBlocks` groups the pixels of an
axis by the stride-4 line pair they read; a block of the image (a row block x a column block)
is decided once when its corners agree, pixel by pixel only where they do not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AxisSampling:
    """Which two grid lines each pixel of one image axis reads, and how much of each.

    Attributes:
        low: ``[n_pixels]`` int64 grid line at or before the pixel centre.
        high: ``[n_pixels]`` int64 the next line (``low`` at the grid's end).
        frac: ``[n_pixels]`` float32 weight of ``high`` (``1 - frac`` for ``low``).
    """

    low: Tensor
    high: Tensor
    frac: Tensor

    @functools.cached_property
    def blocks(self) -> AxisBlocks:
        """:func:`axis_blocks` of this sampling (computed once)."""
        return axis_blocks(self)


@functools.lru_cache(maxsize=32)  # a camera's frames share their geometry: computed once
def axis_sampling(pixels: int, content: int, stride: int, grid: int, device: torch.device) -> AxisSampling:
    """Sampling of a grid of ``grid`` lines at stride ``stride`` by ``pixels`` image pixels.

    The result is cached and shared: treat its tensors as read-only.

    Args:
        pixels: the image's own length along the axis (H or W).
        content: its length in the network input after resizing (h or w, ``<= grid * stride``).
    """
    scale = content / (pixels * stride)  # one float, as F.interpolate computes its scale
    u = ((torch.arange(pixels, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(0, grid - 1)
    low = u.long()
    return AxisSampling(low=low, high=(low + 1).clamp_(max=grid - 1), frac=u - low)


def pick(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for an int64 ``index`` of any shape into dim 0: the same elements by
    ``index_select``, several times faster than advanced indexing on CPUs (the hot path's
    gathers all go through it)."""
    if index.dim() == 1:  # most calls: no reshapes (each op costs microseconds on its own)
        return values.index_select(0, index)
    return values.index_select(0, index.reshape(-1)).view(*index.shape, *values.shape[1:])


def bilinear(v00: Tensor, v01: Tensor, v10: Tensor, v11: Tensor, fy: Tensor, fx: Tensor) -> Tensor:
    """The bilinear value between four corners (``v<row><col>``), ``F.interpolate``'s arithmetic."""
    return (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)


@dataclass(frozen=True)
class AxisBlocks:
    """The pixels of one axis grouped into runs that read the same pair of stride-4 lines.

    Attributes:
        start: ``[B]`` int64 first pixel of each block; length: ``[B]`` its pixels.
        low, high: ``[B]`` the two stride-4 lines its pixels read.
        of_pixel: ``[n_pixels]`` the block of each pixel.
    """

    start: Tensor
    length: Tensor
    low: Tensor
    high: Tensor
    of_pixel: Tensor

    def __len__(self) -> int:
        return len(self.start)

    @property
    def last(self) -> Tensor:
        """``[B]`` last pixel of each block."""
        return self.start + self.length - 1

    @functools.cached_property
    def repeat_plan(self) -> tuple[int, int, int, int] | None:
        """:func:`_repeat_plan` of these blocks (computed once: the samplings are cached)."""
        return _repeat_plan(self)


def axis_blocks(sampling: AxisSampling) -> AxisBlocks:
    """Group an axis' pixels by the grid line pair they read (consecutive: ``low`` rises).

    Runs longer than the usual one (at the image's edges, where the sampling clamps) are cut
    into pieces no longer than it, the short piece first, so that blocks are nearly all of
    one length: the band of blocks is then one dense grid with little padding, and the maps
    are filled by a constant repeat (:func:`fill_blocks`).
    """
    low = sampling.low
    change = torch.ones_like(low, dtype=torch.bool)
    change[1:] = low[1:] != low[:-1]
    start = change.nonzero().squeeze(1)
    length = torch.diff(start, append=torch.tensor([len(low)], device=low.device))
    usual = int(length.mode().values)
    if bool((length > usual).any()):
        # Cut a run of n > usual pixels at n - usual, n - 2 usual, ... from its end.
        run = torch.cumsum(change, 0) - 1  # [n_pixels] the run of each pixel
        offset = torch.arange(len(low), device=low.device) - start[run]  # from the run's start
        from_end = length[run] - 1 - offset  # pixels after it in its run
        change |= (from_end % usual == usual - 1) & (offset > 0)
        start = change.nonzero().squeeze(1)
        length = torch.diff(start, append=torch.tensor([len(low)], device=low.device))
    return AxisBlocks(
        start=start, length=length, low=low[start], high=sampling.high[start],
        of_pixel=torch.cumsum(change, 0) - 1,
    )  # fmt: skip


def corner_disagreement(grid: Tensor) -> Tensor:
    """Per cell ``(r, c)`` of a ``[h, w, ...]`` grid: do the corners ``(r|r+1, c|c+1)`` differ?

    The last row and column pair with themselves, as the clamped sampling reads them.

    Returns:
        ``[h, w]`` bool.
    """
    across = grid[:, :-1] != grid[:, 1:]  # [h, w-1, ...]
    down = grid[:-1] != grid[1:]  # [h-1, w, ...]
    if grid.dim() > 2:
        across, down = across.flatten(2).any(2), down.flatten(2).any(2)
    h, w = grid.shape[:2]
    horizontal = torch.zeros((h, w), dtype=torch.bool, device=grid.device)
    vertical = torch.zeros((h, w), dtype=torch.bool, device=grid.device)
    horizontal[:, :-1] = across
    vertical[:-1] = down
    # A cell's square has two horizontal edges (rows r, r+1) and two vertical ones (cols c, c+1).
    out = horizontal.clone()
    out[:-1] |= horizontal[1:]
    out |= vertical
    out[:, :-1] |= vertical[:, 1:]
    return out


def any_in_windows(flags: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]) -> Tensor:
    """Whether any flag is set in each window ``rows[0][a]..rows[1][a] x cols[0][b]..cols[1][b]``.

    Args:
        flags: ``[h, w]`` bool.
        rows, cols: inclusive ``(first, last)`` line of each window, ``[R]`` and ``[C]``.

    Returns:
        ``[R, C]`` bool, from prefix sums (any window size, two gathers per axis).
    """
    counts = torch.zeros((flags.shape[0], flags.shape[1] + 1), dtype=torch.int32, device=flags.device)
    counts[:, 1:] = flags.cumsum(1)
    per_row = (counts[:, cols[1] + 1] - counts[:, cols[0]]) > 0  # [h, C]
    acc = torch.zeros((flags.shape[0] + 1, per_row.shape[1]), dtype=torch.int32, device=flags.device)
    acc[1:] = per_row.cumsum(0)
    return (acc[rows[1] + 1] - acc[rows[0]]) > 0


def fill_blocks(block_map: Tensor, rows: AxisBlocks, cols: AxisBlocks) -> Tensor:
    """``[R, C]`` per-block values -> ``[H, W]`` per-pixel values (each block over its pixels).

    Blocks of one length but the first and last (any image whose size is a whole multiple of
    its network input's, the usual case) are a repeat by a constant, several times cheaper than
    a gather: the first and last blocks are repeated to whole numbers of blocks, the whole
    repeated, and the result cut where the image starts.
    """
    row_plan, col_plan = rows.repeat_plan, cols.repeat_plan
    if row_plan is None or col_plan is None:
        return block_map.index_select(1, cols.of_pixel).index_select(0, rows.of_pixel)
    (row_step, row_lead, row_trail, top), (col_step, col_lead, col_trail, left) = row_plan, col_plan
    padded = torch.cat(
        (block_map[:1].expand(row_lead - 1, -1), block_map, block_map[-1:].expand(row_trail - 1, -1))
    )
    padded = torch.cat(
        (padded[:, :1].expand(-1, col_lead - 1), padded, padded[:, -1:].expand(-1, col_trail - 1)), dim=1
    )
    height, width = len(rows.of_pixel), len(cols.of_pixel)
    # Repeats as broadcast copies, the columns cut before the rows are repeated: the one copy
    # of the full size is then contiguous and cutting its rows is a view.
    r, c = padded.shape
    across = padded[:, :, None].expand(r, c, col_step).reshape(r, c * col_step)[:, left : left + width]
    return across[:, None, :].expand(r, row_step, width).reshape(r * row_step, width)[top : top + height]


def _repeat_plan(blocks: AxisBlocks) -> tuple[int, int, int, int] | None:
    """``(step, lead, trail, cut)`` when all blocks but the first and last are ``step`` long:
    the first and last then take ``lead`` and ``trail`` blocks of ``step``, and ``cut`` pixels
    of the repeated first come before the image's first; else ``None``."""
    lengths = blocks.length
    if len(lengths) < 3:
        return None
    step = int(lengths[1])
    if not bool((lengths[1:-1] == step).all()):
        return None
    first, last = int(lengths[0]), int(lengths[-1])
    lead = -(-first // step)
    return step, lead, -(-last // step), lead * step - first
