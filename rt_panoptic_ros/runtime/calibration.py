"""INT8 calibration images: a folder of images, prepared exactly as the Predictor prepares a frame.

:func:`~rt_panoptic_ros.runtime.precision.quantize_int8` measures each activation's range on
these batches, so they must look like what the network sees at run time: fitted into the
input size keeping the aspect ratio and padded top-left (:mod:`rt_panoptic_ros.image_fit`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.image_fit import fit_batch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def calibration_images(folder: str | Path, batch: int = 1) -> list[Path]:
    """The image files of ``folder`` (sorted, not recursive): at least one batch of them.

    Raises:
        InputError: no such folder, or fewer images than ``batch``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of calibration images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise InputError(f"{folder}: no calibration images (looked for {', '.join(IMAGE_SUFFIXES)})")
    if len(files) < batch:
        raise InputError(
            f"{folder}: {len(files)} calibration image(s), fewer than one batch of {batch}: add images"
        )
    return files


def calibration_fingerprint(files: list[Path]) -> str:
    """SHA-256 of the images' names and bytes: the same folder with one pixel changed differs."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0".encode())
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def calibration_batches(files: list[Path], shape: tuple[int, int, int, int]) -> Iterator[np.ndarray]:
    """uint8 ``[N, 3, H, W]`` batches of the images, fitted and padded as the Predictor does.

    Every image is used: a last incomplete batch is filled up with the first images again
    (a graph's batch size is fixed), so ``ceil(len(files) / N)`` batches come out.

    Raises:
        ImageFileError: a file that is not a readable image (named).
    """
    from rt_panoptic_ros.image_io import read_rgb  # OpenCV: only where images are read

    n, _, height, width = shape
    order = files + files[: (-len(files)) % n]
    for start in range(0, len(order), n):
        images = [torch.from_numpy(read_rgb(p)).permute(2, 0, 1) for p in order[start : start + n]]
        yield fit_batch(images, (height, width), torch.device("cpu")).images.contiguous().numpy()
