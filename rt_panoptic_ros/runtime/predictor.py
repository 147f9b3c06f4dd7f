"""Predictor: one numpy RGB image in, one :class:`~rt_panoptic_ros.panoptic.PanopticResult` out.

It owns the whole inference path of DESIGN.md: the image goes to the device as uint8 (a
zero-copy view until then), is fitted into the configured input size if there is one and
padded (:mod:`rt_panoptic_ros.image_fit`, the rule training's evaluation and INT8 calibration
follow too), run by a backend, decoded on the same device with every decision made at the
image's own resolution (through the fit), and copied to the host once.

The four stages are public methods (:meth:`Predictor.upload`, :meth:`~Predictor.infer`,
:meth:`~Predictor.decode`, :meth:`~Predictor.download`) so that the benchmark times exactly
what :meth:`Predictor.predict_batch` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rt_panoptic_ros.config import Config
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.image_fit import FittedBatch, decode_fitted, fit_batch
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet
from rt_panoptic_ros.panoptic import PanopticResult
from rt_panoptic_ros.runtime.backends import Backend, BackendOptions, create_backend
from rt_panoptic_ros.runtime.backends.input_checks import check_input_shape
from rt_panoptic_ros.runtime.sources import ModelSource

log = logging.getLogger("rt_panoptic_ros.runtime")


class Predictor:
    """Panoptic segmentation of numpy RGB images with one model.

    Args:
        model: a model file (``.pt``), an :class:`RTPanoNet`, or for the onnxruntime and
            tensorrt backends an ``.onnx`` (``rt-panoptic-export``) or ``.engine``
            (``rt-panoptic-build-engine``) file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; ``None``: the CPU, except for
            ``tensorrt`` (CUDA) and ``auto`` (whatever it picks).
        backend: ``torch``, ``onnxruntime``, ``tensorrt`` or ``auto``
            (:mod:`~rt_panoptic_ros.runtime.backends`).
        cfg: decoder thresholds and input size to use instead of the model's own
            (``model.cfg``); the architecture and classes always come from the model.
        precision: ``fp32`` / ``fp16`` / ``int8``; default: the backend's (see
            :class:`~rt_panoptic_ros.runtime.backends.BackendOptions`).
        input_size: ``(H, W)`` network input size (multiples of 128), overriding
            ``cfg.input``; images are resized to fit it. TensorRT needs one.
        batch_size: images per call a TensorRT engine is built for.
        cuda_graph: torch on CUDA: replay a CUDA graph of the network.
        cache_dir: where ONNX exports and engines go instead of beside the model file.
        calibration_dir: tensorrt int8: a folder of calibration images.

    Example:
        >>> predictor = Predictor("models/tri_cityscapes.pt")  # doctest: +SKIP
        >>> result = predictor(rgb)  # rgb: uint8 [H, W, 3]  # doctest: +SKIP
        >>> result.semantic.shape == rgb.shape[:2]  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        model: str | Path | RTPanoNet,
        device: str | torch.device | None = None,
        backend: str = "torch",
        cfg: Config | None = None,
        *,
        precision: str | None = None,
        input_size: tuple[int, int] | None = None,
        batch_size: int = 1,
        cuda_graph: bool = False,
        cache_dir: str | Path | None = None,
        calibration_dir: str | Path | None = None,
    ) -> None:
        source = ModelSource.open(model)
        cfg = cfg if cfg is not None else source.cfg
        if input_size is not None:
            cfg = cfg.with_input_size(*input_size)
        height, width = cfg.input.height, cfg.input.width
        options = BackendOptions(
            precision=precision,
            input_shape=(batch_size, 3, height, width) if height and width else None,
            cuda_graph=cuda_graph,
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
            calibration_dir=Path(calibration_dir) if calibration_dir is not None else None,
        )
        self.backend: Backend = create_backend(backend, source, device, options)
        self.device = self.backend.device
        fixed = getattr(self.backend, "input_shape", None)  # static ONNX, engine: one input shape
        if fixed is not None and all(fixed[2:]):
            if height and width:  # refuse now, not at the first frame
                check_input_shape(
                    fixed, (batch_size, 3, height, width), getattr(self.backend, "where", backend)
                )
            else:
                cfg = cfg.with_input_size(fixed[2], fixed[3])
                log.info("input size %dx%d, the size %s was built for", fixed[2], fixed[3], self.backend.name)
        self.cfg = cfg

    def __call__(self, image: np.ndarray) -> PanopticResult:
        """Segment one ``[H, W, 3]`` uint8 RGB image; the result's maps are ``[H, W]`` on the CPU."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PanopticResult]:
        """Segment several images (any sizes) in one network call; results on the CPU."""
        if len(images) == 0:
            return []
        batch = self.upload(images)
        return self.download(self.decode(self.infer(batch.images), batch))

    def upload(self, images: Sequence[np.ndarray]) -> FittedBatch:
        """Stage 1: numpy ``[H, W, 3]`` uint8 images -> a padded (fitted) batch on the device."""
        tensors = [self._to_device(image, k) for k, image in enumerate(images)]
        return fit_batch(tensors, (self.cfg.input.height, self.cfg.input.width), self.device)

    def infer(self, images: Tensor) -> HeadOutputs:
        """Stage 2: the backend runs the network; outputs on the device."""
        return self.backend(images)

    def decode(
        self, outputs: HeadOutputs, batch: FittedBatch, cfg: Config | None = None
    ) -> list[PanopticResult]:
        """Stage 3: the panoptic decoder, on the device; maps decided at each image's own size
        (:func:`~rt_panoptic_ros.image_fit.decode_fitted`).

        Args:
            cfg: decoder thresholds for this call instead of :attr:`cfg` (a pipeline swaps its
                config whole and hands each frame the one it started with).
        """
        return decode_fitted(outputs, cfg or self.cfg, batch)

    @staticmethod
    def download(results: list[PanopticResult]) -> list[PanopticResult]:
        """Stage 4: the final maps to the host (one copy each)."""
        return [r.to("cpu") for r in results]

    def _to_device(self, image: np.ndarray, index: int) -> Tensor:
        """``[H, W, 3]`` uint8 numpy -> ``[3, H, W]`` uint8 on the device (a view until the copy)."""
        if not isinstance(image, np.ndarray):
            raise InputError(f"image {index}: expected a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"image {index}: expected uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"image {index}: empty ({image.shape[0]}x{image.shape[1]})")
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        # HWC viewed as CHW: channels_last for free, no copy on the CPU.
        return tensor.permute(2, 0, 1)
