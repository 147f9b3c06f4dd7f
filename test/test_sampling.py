"""The geometry of reading coarse grids at the image's pixels (panoptic/sampling.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rt_panoptic_ros.panoptic.sampling import axis_blocks, axis_sampling, bilinear, fill_blocks


@pytest.mark.parametrize(("pixels", "content", "stride", "grid"), [(256, 256, 4, 64), (100, 100, 8, 16)])
def test_without_resize_it_is_f_interpolate(pixels, content, stride, grid):
    """The original upsamples with F.interpolate(scale_factor=stride, bilinear, align_corners=False)."""
    values = torch.randn(1, 1, grid, grid)
    rows = axis_sampling(pixels, content, stride, grid, torch.device("cpu"))
    fy, fx = rows.frac[:, None], rows.frac[None, :]
    v = values[0, 0]
    ours = bilinear(
        v[rows.low][:, rows.low],
        v[rows.low][:, rows.high],
        v[rows.high][:, rows.low],
        v[rows.high][:, rows.high],
        fy,
        fx,
    )
    theirs = F.interpolate(values, scale_factor=stride, mode="bilinear", align_corners=False)[
        0, 0, :pixels, :pixels
    ]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("pixels", "content", "grid"), [(1024, 1024, 256), (256, 128, 32), (333, 200, 64), (100, 230, 64)]
)
def test_blocks_cover_the_axis_in_runs_of_one_line_pair(pixels, content, grid):
    sampling = axis_sampling(pixels, content, 4, grid, torch.device("cpu"))
    blocks = axis_blocks(sampling)
    assert int(blocks.length.sum()) == pixels and int(blocks.start[0]) == 0
    assert torch.equal(blocks.start[1:], (blocks.start + blocks.length)[:-1])
    for k in range(len(blocks)):  # every pixel of a block reads the block's line pair
        span = slice(int(blocks.start[k]), int(blocks.start[k] + blocks.length[k]))
        assert bool((sampling.low[span] == blocks.low[k]).all()) and bool(
            (sampling.high[span] == blocks.high[k]).all()
        )
    usual = int(blocks.length.mode().values)
    assert int(blocks.length.max()) == usual  # edge runs are cut: one padded shape fits all


@pytest.mark.parametrize(("height", "width"), [(1024, 2048), (256, 512), (333, 200), (97, 101)])
def test_fill_blocks_repeats_each_block_over_its_pixels(height, width):
    rows = axis_blocks(axis_sampling(height, min(height, 256), 4, 64, torch.device("cpu")))
    cols = axis_blocks(axis_sampling(width, min(width, 256), 4, 64, torch.device("cpu")))
    block_map = torch.randint(0, 255, (len(rows), len(cols)), dtype=torch.int16)
    filled = fill_blocks(block_map, rows, cols)
    assert filled.shape == (height, width) and filled.is_contiguous()
    assert torch.equal(filled, block_map[rows.of_pixel][:, cols.of_pixel])
