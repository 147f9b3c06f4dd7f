"""Conversion of the public TRI checkpoint into this package's model file.

The original implementation (TRI-ML/realtime_panoptic) publishes its Cityscapes model as a
bare state dict (``cvpr_realtime_pano_cityscapes_standalone_no_prefix.pth``). Its backbone
keys (``backbone.body.*``, ``backbone.fpn.*``) are torchvision's and load unchanged; its
head keys are renamed here (``../shared/tri_reference/keys.tsv`` lists them all):

=================================================  =============================================
TRI                                                rt_panoptic_ros
=================================================  =============================================
``panoptic_head.cls_tower.{3k,3k+1}.*``            ``head.semantic_tower.{k}.{0,1}.*`` (conv, GN)
``panoptic_head.bbox_tower.{3k,3k+1}.*``           ``head.localization_tower.{k}.{0,1}.*``
``panoptic_head.cls_logits.*``                     ``head.semantic.conv.*``
``panoptic_head.levelness.*``                      ``head.levelness.conv.*``
``panoptic_head.box_cls_logits.*``                 ``head.box_cls.*``
``panoptic_head.bbox_pred.*``                      ``head.box_reg.conv.*``
``panoptic_head.centerness.*``                     ``head.centerness.*``
``panoptic_head.scales.{i}.scale`` (5 x ``[1]``)   ``head.box_reg.scales`` (``[5]``)
=================================================  =============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from rt_panoptic_ros.config import Config, preset
from rt_panoptic_ros.errors import CheckpointError
from rt_panoptic_ros.model.checkpoint import load_weights, read_torch_file, save_checkpoint
from rt_panoptic_ros.model.network import RTPanoNet

_TOWERS = {"cls_tower": "semantic_tower", "bbox_tower": "localization_tower"}
_PREDICTORS = {
    "cls_logits": "semantic.conv",
    "levelness": "levelness.conv",
    "box_cls_logits": "box_cls",
    "bbox_pred": "box_reg.conv",
    "centerness": "centerness",
}
_TOWER_KEY = re.compile(r"panoptic_head\.(cls_tower|bbox_tower)\.(\d+)\.(weight|bias)")
_PREDICTOR_KEY = re.compile(r"panoptic_head\.(\w+)\.(weight|bias)")
_SCALE_KEY = re.compile(r"panoptic_head\.scales\.(\d+)\.scale")
# Wrappers that training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model")


def convert_tri_state_dict(tri_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a TRI state dict's keys to :class:`RTPanoNet`'s (table in the module docstring).

    Keys this mapping does not know are kept as they are, so that loading names them as
    unexpected instead of dropping them silently.
    """
    converted: dict[str, Tensor] = {}
    scales: dict[int, Tensor] = {}
    for key, value in tri_state.items():
        key = key.removeprefix("module.")  # saved from DistributedDataParallel
        if match := _TOWER_KEY.fullmatch(key):
            tower, index, kind = match.groups()
            block, layer = divmod(int(index), 3)  # Sequential(conv, norm, relu) x depth
            converted[f"head.{_TOWERS[tower]}.{block}.{layer}.{kind}"] = value
        elif (match := _SCALE_KEY.fullmatch(key)) and isinstance(value, Tensor):
            scales[int(match.group(1))] = value.reshape(-1)
        elif (match := _PREDICTOR_KEY.fullmatch(key)) and match.group(1) in _PREDICTORS:
            converted[f"head.{_PREDICTORS[match.group(1)]}.{match.group(2)}"] = value
        else:
            converted[key] = value
    if scales:
        if sorted(scales) != list(range(len(scales))):
            raise CheckpointError(f"panoptic_head.scales: levels {sorted(scales)}, expected 0..N-1")
        converted["head.box_reg.scales"] = torch.cat([scales[i] for i in sorted(scales)])
    return converted


def unwrap_state_dict(data: object, source: str) -> Mapping[str, Tensor]:
    """The state dict inside a loaded TRI file (bare, or under 'state_dict' / 'model')."""
    if isinstance(data, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{source}: not a state dict (expected a mapping of names to tensors)")
    return data


def convert_tri_checkpoint(src: str | Path, dst: str | Path, cfg: Config | None = None) -> RTPanoNet:
    """Read the TRI checkpoint ``src``, check it fits ``cfg``, and write our model file ``dst``.

    Args:
        cfg: the architecture the weights are for; default :func:`preset` ``"tri_cityscapes"``.

    Returns:
        The converted model (eval mode, CPU).

    Raises:
        CheckpointError: ``src`` is missing, not a state dict, or does not fit the network.
    """
    cfg = cfg if cfg is not None else preset("tri_cityscapes")
    state = convert_tri_state_dict(unwrap_state_dict(read_torch_file(src), str(src)))
    model = RTPanoNet(cfg)
    load_weights(model, state, source=str(src))
    save_checkpoint(model, dst, meta={"converted_from": "tri", "source": Path(src).name})
    return model.eval()
