"""INT8 calibration images for TensorRT: a folder of images, fitted to the engine's input.

Pure torch and OpenCV; the TensorRT calibrator (``tensorrt_backend.py``) only copies these
batches to the GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import torch
from torch import Tensor

from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.runtime.preprocess import fit, pad_batch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def calibration_images(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (sorted, not recursive).

    Raises:
        InputError: no such folder, or no image in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of calibration images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no calibration images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def calibration_fingerprint(files: list[Path]) -> str:
    """SHA-256 of the images' names and sizes: part of an INT8 engine's cache key."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.stat().st_size}\n".encode())
    return digest.hexdigest()


def calibration_batches(files: list[Path], shape: tuple[int, int, int, int]) -> Iterator[Tensor]:
    """uint8 ``[N, 3, H, W]`` CPU batches of the images, fitted and padded as the Predictor does.

    A last incomplete batch is dropped (an engine's batch size is fixed).

    Raises:
        InputError: a file that is not a readable image.
    """
    n, _, height, width = shape
    batch: list[Tensor] = []
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: not a readable image")
        rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        batch.append(fit(rgb, (height, width)))
        if len(batch) == n:
            yield pad_batch(batch, (height, width), torch.device("cpu")).contiguous()
            batch = []
