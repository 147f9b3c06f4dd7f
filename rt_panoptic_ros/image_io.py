"""Image files: RGB images and panoptic PNGs (segment ids ``R + 256 G + 256^2 B``).

One implementation for every reader and writer of the project (``rt-panoptic-infer``, the
demo, the datasets, the evaluator). OpenCV does the coding (it works in BGR; these functions
take and give RGB); every failure names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from rt_panoptic_ros.errors import ImageFileError

#: Segment id of unlabelled (VOID) pixels in a panoptic PNG.
VOID_SEGMENT = 0


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[H, W]`` uint32 segment ids ``R + 256·G + 256²·B``."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` integer segment ids (< 256³) -> ``[H, W, 3]`` uint8 RGB (inverse of :func:`rgb_to_id`)."""
    ids = np.asarray(ids).astype("<u4")
    return ids[..., None].view(np.uint8)[..., :3].copy()


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB (grey images are expanded to 3 channels).

    Raises:
        ImageFileError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageFileError(f"{path}: broken symbolic link (to {os.readlink(path)})")
    if not path.is_file():
        raise ImageFileError(f"{path}: image not found")
    bgr = _decode(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageFileError(f"{path}: cannot decode the image (corrupt, truncated or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode(path: Path, flags: int) -> np.ndarray | None:
    """Decode an image file's bytes; ``None`` when OpenCV cannot.

    ``cv2.imdecode`` rather than ``cv2.imread``: on a truncated JPEG, ``imread`` returns the
    part it could read with the rest grey (and only warns on stderr), ``imdecode`` refuses it,
    as the node does with the same bytes.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageFileError(f"{path}: cannot read ({error.strerror or error})") from None
    if data.size == 0:
        return None
    return cv2.imdecode(data, flags)


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    """Write ``[H, W, 3]`` uint8 RGB (format from the suffix; ``.png`` for lossless)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ImageFileError(f"{path}: cannot write the image")


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a panoptic PNG as ``[H, W]`` uint32 segment ids (0 = VOID).

    Raises:
        ImageFileError: the file is missing, is not a PNG OpenCV can decode, or is not 8-bit
            RGB(A) (an alpha channel is ignored, as panopticapi does).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: panoptic PNG not found")
    bgr = _decode(path, cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise ImageFileError(f"{path}: cannot decode the panoptic PNG (corrupt, truncated or not an image)")
    if bgr.ndim != 3 or bgr.shape[2] not in (3, 4) or bgr.dtype != np.uint8:
        channels = 1 if bgr.ndim == 2 else bgr.shape[2]
        raise ImageFileError(
            f"{path}: panoptic PNG is {channels}-channel {bgr.dtype}, expected 8-bit RGB "
            "(ids R + 256*G + 256^2*B)"
        )
    # OpenCV decodes to BGR(A). As RGBA with a zero alpha, each pixel's 4 bytes read as one
    # little-endian uint32 are the id: no arithmetic on the whole image.
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA if bgr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    rgba[..., 3] = 0
    return rgba.view("<u4")[..., 0]


def write_panoptic_png(path: str | Path, ids: np.ndarray) -> None:
    """Write ``[H, W]`` segment ids as an 8-bit RGB panoptic PNG."""
    write_rgb(path, id_to_rgb(ids))
