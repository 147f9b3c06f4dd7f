"""RTPanoNet: raw uint8 RGB in, the panoptic head's raw outputs out.

Normalisation lives inside the network so that every backend (PyTorch, ONNX Runtime,
TensorRT) takes the camera's pixels as they are and no pre-processing can drift between
them. Decoding the outputs into a panoptic segmentation is :func:`rt_panoptic_ros.panoptic.decode`'s
job, which serves every backend alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rt_panoptic_ros.config import SIZE_DIVISIBILITY, Config, InputConfig
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.model.backbone import build_backbone
from rt_panoptic_ros.model.head import HeadOutputs, PanopticHead


class PixelNormalizer(nn.Module):
    """uint8 RGB ``[N, 3, H, W]`` -> float ``(x[order] - mean) / std`` in the backbone's channel order."""

    def __init__(self, cfg: InputConfig) -> None:
        super().__init__()
        self.to_bgr = cfg.channel_order == "bgr"
        # Not persistent: they come from the config, which the checkpoint already holds.
        self.register_buffer("mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(self.mean.dtype)
        if self.to_bgr:
            x = x.flip(1)
        return (x - self.mean) * self.inv_std


class RTPanoNet(nn.Module):
    """The real-time panoptic network of Hou et al. (CVPR 2020): backbone, FPN, unified head.

    Args:
        cfg: architecture (``cfg.model``), input normalisation (``cfg.input``) and the number
            of semantic and thing classes (``cfg.dataset``).

    Example:
        >>> from rt_panoptic_ros.config import preset
        >>> net = RTPanoNet(preset("small_cityscapes")).eval()
        >>> out = net(torch.zeros(1, 3, 256, 512, dtype=torch.uint8))
        >>> tuple(out.semantic_logits.shape), tuple(out.levelness_logits.shape)
        ((1, 19, 32, 64), (1, 6, 64, 128))
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalizer = PixelNormalizer(cfg.input)
        self.backbone = build_backbone(cfg.model)
        self.head = PanopticHead(cfg.model, cfg.dataset.num_classes, cfg.dataset.num_thing_classes)

    def forward(self, images: Tensor) -> HeadOutputs:
        """Run the network.

        Args:
            images: uint8 ``[N, 3, H, W]`` RGB, H and W multiples of 128 (the stride of P7).

        Returns:
            :class:`HeadOutputs`: ``semantic_logits [N,C,H/8,W/8]``, ``levelness_logits
            [N,6,H/4,W/4]``, and per level (strides 8..128) ``box_cls [N,C_th,h,w]``,
            ``box_reg [N,4,h,w]`` (l, t, r, b in input pixels), ``centerness [N,1,h,w]``.

        Raises:
            InputError: ``images`` is not uint8 ``[N, 3, H, W]`` with H, W multiples of 128.
        """
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            check_input(images)
        features = self.backbone(self.normalizer(images))
        return self.head(list(features.values()))


def check_input(images: Tensor) -> None:
    """Raise :class:`InputError` unless ``images`` is uint8 ``[N, 3, H, W]``, H, W % 128 == 0."""
    if not isinstance(images, Tensor):
        raise InputError(f"images: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise InputError(f"images: expected dtype uint8 (raw RGB pixels), got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images: expected shape [N, 3, H, W], got {list(images.shape)}")
    h, w = images.shape[-2:]
    if h == 0 or w == 0 or h % SIZE_DIVISIBILITY or w % SIZE_DIVISIBILITY:
        raise InputError(
            f"images: height and width must be positive multiples of {SIZE_DIVISIBILITY}, "
            f"got {h}x{w} (pad or resize first; the Predictor does)"
        )
