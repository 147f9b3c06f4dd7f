"""One typed configuration for the network, the decoder, the input and the dataset.

A :class:`Config` is a tree of frozen dataclasses, so a variant is one
``dataclasses.replace`` away::

    >>> import dataclasses
    >>> from rt_panoptic_ros.config import preset
    >>> cfg = preset("tri_cityscapes")
    >>> cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, stuff_area=0))
    >>> cfg.decoder.stuff_area
    0

Every field is a :func:`~rt_panoptic_ros.config_schema.setting`: default, description and
range written once, read by :func:`validate`, by the node's ``decoder.*`` parameter descriptors
and by ``docs/configuration.md``. It round-trips through plain dictionaries and YAML
(:meth:`Config.to_dict`, :meth:`Config.from_dict`, :func:`load_yaml`, :func:`save_yaml`) with the
package's one typed loader (:func:`~rt_panoptic_ros.config_schema.from_plain`, which the
training config uses too); a checkpoint embeds the dictionary, which makes every model file
self-describing. Unknown keys (with their close matches), ill-typed or invalid fields are
refused with a :class:`~rt_panoptic_ros.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rt_panoptic_ros.config_schema import (
    SettingInfo,
    apply_overrides,
    from_plain,
    read_yaml,
    setting,
    setting_problems,
    settings,
    to_plain,
)
from rt_panoptic_ros.errors import ConfigError

__all__ = [
    "BACKBONES", "CITYSCAPES_CLASSES", "FPN_STRIDES", "PRESETS", "SIZE_DIVISIBILITY", "Config",
    "DatasetMeta", "DecoderConfig", "InputConfig", "IouVariant", "ModelConfig", "SettingInfo",
    "apply_overrides", "from_plain", "load_yaml", "preset", "read_yaml", "save_yaml", "setting",
    "settings", "to_plain", "validate",
]  # fmt: skip

#: Strides of the FPN levels P3..P7 whose outputs the head predicts on (paper Sec. 4.2).
FPN_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)
#: Height and width of a network input must be multiples of this (the stride of P7).
SIZE_DIVISIBILITY: int = FPN_STRIDES[-1]

BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")
#: The IoU of Eq. 6 (``decoder.iou_variant``): the paper's, or the original code's (TRI model).
IouVariant = Literal["iou", "tri"]


# ------------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`~rt_panoptic_ros.model.RTPanoNet` (torchvision backbones with
    frozen BatchNorm; ``trainable_backbone_layers`` counts stages as torchvision's detection
    models do). Loading a checkpoint never looks at ``backbone_weights``."""

    backbone: str = setting("resnet50", "backbone network", choices=BACKBONES)
    backbone_weights: str | None = setting(
        None,
        "torchvision weight enum member (e.g. IMAGENET1K_V1) to initialise the backbone from when a "
        "model is built for training; null: random initialisation",
    )
    trainable_backbone_layers: int = setting(
        3, "backbone stages, counted from the last, that train; the rest are frozen", low=0, high=5
    )
    fpn_channels: int = setting(256, "channels of every FPN level P3..P7", low=1)
    semantic_channels: int = setting(128, "width of the semantic (class) tower", low=1)
    localization_channels: int = setting(256, "width of the localisation (box) tower", low=1)
    tower_convs: int = setting(4, "depth of each tower (conv + GroupNorm + ReLU blocks)", low=1)
    group_norm_group_size: int = setting(8, "channels per GroupNorm group (TRI: 8)", low=1)
    prior_probability: float = setting(
        0.01,
        "initial box-class probability (focal-loss bias init, RetinaNet)",
        low=0.0,
        high=1.0,
        exclusive=True,
    )


@dataclass(frozen=True)
class InputConfig:
    """How raw uint8 RGB pixels are normalised inside the network, and the input size.

    ``pixel_mean`` and ``pixel_std`` are in ``channel_order`` and on the 0..255 scale (TRI: BGR,
    mean ``(102.9801, 115.9465, 122.7717)``, std 1; torchvision ImageNet weights: RGB, mean
    ``(123.675, 116.28, 103.53)``, std ``(58.395, 57.12, 57.375)``).
    """

    channel_order: Literal["rgb", "bgr"] = setting("bgr", "channel order the first convolution expects")
    pixel_mean: tuple[float, float, float] = setting(
        (102.9801, 115.9465, 122.7717), "per-channel mean subtracted (0..255 scale, channel_order)"
    )
    pixel_std: tuple[float, float, float] = setting(
        (1.0, 1.0, 1.0), "per-channel divisor (0..255 scale, channel_order)", low=0.0, exclusive=True
    )
    height: int = setting(
        0,
        "network input height images are fitted into (aspect kept, padded); 0: the image's own, "
        "padded up to a multiple of 128",
        low=0,
        step=SIZE_DIVISIBILITY,
    )
    width: int = setting(
        0,
        "network input width images are fitted into (aspect kept, padded); 0: the image's own, "
        "padded up to a multiple of 128",
        low=0,
        step=SIZE_DIVISIBILITY,
    )


@dataclass(frozen=True)
class DecoderConfig:
    """Thresholds of the parameter-free panoptic decoder (paper Sec. 3).

    Defaults are those the original implementation ships for its Cityscapes model, but for
    the two fields it does not have: ``instance_score_thresh`` (detectron2's panoptic fusion
    rule) and ``box_map_background``; 0.05 and ``"tri"`` are the best PQ on a synthetic
    validation split (``benchmarks/decoder_pq.json``); the TRI preset keeps the original's 0.
    """

    pre_nms_thresh: float = setting(
        0.06, "box-class probability a location needs to become a candidate", low=0.0, high=1.0
    )
    pre_nms_top_n: int = setting(1000, "most candidates kept per FPN level before NMS", low=1, high=100000)
    nms_thresh: float = setting(
        0.6, "IoU above which class-aware NMS suppresses a candidate (Eq. 4)", low=0.0, high=1.0
    )
    max_detections: int = setting(100, "most queries kept after NMS, per image", low=1, high=10000)
    mask_thresh: float = setting(
        0.4, "instance mask threshold on M_j = P_loc x P_sem (Eq. 5, 7)", low=0.0, high=1.0
    )
    overlap_threshold: float = setting(
        0.5,
        "fusion drops an instance already covered by more than this fraction of its area (Kirillov et al.)",
        low=0.0,
        high=1.0,
    )
    stuff_area: int = setting(
        2048, "stuff segments smaller than this (pixels) become void", low=0, high=10**8
    )
    iou_variant: IouVariant = setting(
        "iou", "iou: the paper's IoU (Eq. 6); tri: the original code's (I+1)/(U+1) - (G-U)/G (TRI model)"
    )
    instance_score_thresh: float = setting(
        0.05, "detections scoring below this take no part in fusion (0: keep every query)", low=0.0, high=1.0
    )
    box_map_background: Literal["exclude", "tri"] = setting(
        "tri",
        "which pixels take a box in the dense box map (Eq. 14): tri, the original's rule, every pixel "
        "(its best level's box); exclude, pixels whose levelness argmax is background take none",
    )


CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetMeta:
    """What the network's output channels mean (box-class channel ``k`` predicts semantic class
    ``thing_ids[k]``)."""

    name: str = setting("cityscapes", "dataset name, for people")
    class_names: tuple[str, ...] = setting(
        CITYSCAPES_CLASSES, "one name per semantic class; the semantic logits have one channel each"
    )
    thing_ids: tuple[int, ...] = setting(
        (11, 12, 13, 14, 15, 16, 17, 18), "semantic ids of the thing classes, in box-class channel order"
    )
    category_ids: tuple[int, ...] = setting(
        (), "dataset category id of each semantic class (COCO panoptic files use these); empty: the id itself"
    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_thing_classes(self) -> int:
        return len(self.thing_ids)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        things = set(self.thing_ids)
        return tuple(i for i in range(self.num_classes) if i not in things)


@dataclass(frozen=True)
class Config:
    """Everything needed to build, feed and decode one model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    dataset: DatasetMeta = field(default_factory=DatasetMeta)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dictionary (tuples become lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Config:
        """Build from :meth:`to_dict`'s output; missing fields take their defaults.

        Raises:
            ConfigError: an unknown field, a value of the wrong type, or an invalid value,
                named as ``source: model.fpn_channels: ...``.
        """
        return from_plain(cls, data, source)

    def with_input_size(self, height: int, width: int) -> Config:
        """This config with ``input.height, input.width`` set (checked: 0 or multiples of 128)."""
        return dataclasses.replace(
            self, input=dataclasses.replace(self.input, height=int(height), width=int(width))
        )


def validate(cfg: Config) -> None:
    """Check every field's range (:func:`setting`) and what relates fields to each other.

    Raises:
        ConfigError: everything wrong, each named by its field, in one message.
    """
    m, i, ds = cfg.model, cfg.input, cfg.dataset
    problems = setting_problems(cfg)
    for name in ("semantic_channels", "localization_channels"):
        if m.group_norm_group_size >= 1 and getattr(m, name) % m.group_norm_group_size:
            problems.append(
                f"model.{name}: {getattr(m, name)} is not a multiple of "
                f"model.group_norm_group_size ({m.group_norm_group_size})"
            )
    if len(i.pixel_mean) != 3 or len(i.pixel_std) != 3:
        problems.append("input.pixel_mean / input.pixel_std: expected 3 values each")
    if ds.num_classes < 1:
        problems.append("dataset.class_names: empty, expected at least one class")
    bad_things = [t for t in ds.thing_ids if not 0 <= t < ds.num_classes]
    if bad_things:
        problems.append(f"dataset.thing_ids: {bad_things} outside 0..{ds.num_classes - 1}")
    if len(set(ds.thing_ids)) != len(ds.thing_ids):
        problems.append(f"dataset.thing_ids: {list(ds.thing_ids)} has duplicates")
    if ds.category_ids and len(ds.category_ids) != ds.num_classes:
        problems.append(f"dataset.category_ids: {len(ds.category_ids)} ids for {ds.num_classes} classes")
    if problems:
        raise ConfigError("; ".join(problems))


def load_yaml(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a :class:`Config` from a YAML file written by :func:`save_yaml` (or by hand),
    with ``key=value`` ``overrides`` applied first."""
    return from_plain(Config, apply_overrides(read_yaml(path), overrides), str(path))


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML; :func:`load_yaml` gives an equal :class:`Config` back."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------- presets


def _tri_cityscapes() -> Config:
    """The public TRI Cityscapes model (ResNet-50, 19 classes, things 11..18)."""
    return Config(
        decoder=DecoderConfig(iou_variant="tri", box_map_background="tri", instance_score_thresh=0.0)
    )


def _small_cityscapes() -> Config:
    """ResNet-18 with narrow towers: fast enough to run and train on a CPU."""
    return Config(
        model=ModelConfig(
            backbone="resnet18", fpn_channels=128, semantic_channels=64,
            localization_channels=128, tower_convs=2,
        ),
        input=_IMAGENET_INPUT,
    )  # fmt: skip


def _mobile_cityscapes() -> Config:
    """MobileNetV3-Large with narrow towers, for embedded GPUs."""
    return Config(
        model=ModelConfig(
            backbone="mobilenet_v3_large", fpn_channels=96, semantic_channels=64,
            localization_channels=96, tower_convs=2,
        ),
        input=_IMAGENET_INPUT,
    )  # fmt: skip


# torchvision's ImageNet weights take RGB in [0, 1] normalised by these; here on the 0..255 scale.
_IMAGENET_INPUT = InputConfig(
    channel_order="rgb", pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375)
)

_PRESETS = {
    "tri_cityscapes": _tri_cityscapes,
    "small_cityscapes": _small_cityscapes,
    "mobile_cityscapes": _mobile_cityscapes,
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> Config:
    """A named configuration: ``"tri_cityscapes"`` or one of the small CPU presets.

    Raises:
        ConfigError: ``name`` is not in :data:`PRESETS`.
    """
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}, expected one of {', '.join(PRESETS)}") from None
