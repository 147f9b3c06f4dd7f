"""One typed configuration for the network, the decoder, the input and the dataset.

A :class:`Config` is a tree of frozen dataclasses, so a variant is one
``dataclasses.replace`` away::

    >>> import dataclasses
    >>> from rt_panoptic_ros.config import preset
    >>> cfg = preset("tri_cityscapes")
    >>> cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, stuff_area=0))
    >>> cfg.decoder.stuff_area
    0

It round-trips through plain dictionaries and YAML (:meth:`Config.to_dict`,
:meth:`Config.from_dict`, :func:`load_yaml`, :func:`save_yaml`); a checkpoint embeds the
dictionary, which makes every model file self-describing. Unknown or ill-typed fields are
refused with a :class:`~rt_panoptic_ros.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rt_panoptic_ros.errors import ConfigError

#: Strides of the FPN levels P3..P7 whose outputs the head predicts on (paper Sec. 4.2).
FPN_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)
#: Height and width of a network input must be multiples of this (the stride of P7).
SIZE_DIVISIBILITY: int = FPN_STRIDES[-1]

BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`~rt_panoptic_ros.model.RTPanoNet`.

    Attributes:
        backbone: one of :data:`BACKBONES` (torchvision models, frozen BatchNorm).
        backbone_weights: name of a torchvision weight enum member (e.g. ``"IMAGENET1K_V1"``)
            to initialise the backbone from when a model is built for training; ``None`` for
            random initialisation. Loading a checkpoint never looks at it.
        trainable_backbone_layers: how many backbone stages, counted from the last, train
            (0..5, as torchvision's detection models); the rest are frozen.
        fpn_channels: channels of every FPN level P3..P7.
        semantic_channels: width of the semantic (class) tower.
        localization_channels: width of the localisation (box) tower.
        tower_convs: depth of each tower (conv + GroupNorm + ReLU blocks).
        group_norm_group_size: channels per GroupNorm group (TRI: 8, i.e. groups = channels / 8).
        prior_probability: initial box-class probability (focal-loss bias init, RetinaNet).
    """

    backbone: str = "resnet50"
    backbone_weights: str | None = None
    trainable_backbone_layers: int = 3
    fpn_channels: int = 256
    semantic_channels: int = 128
    localization_channels: int = 256
    tower_convs: int = 4
    group_norm_group_size: int = 8
    prior_probability: float = 0.01


@dataclass(frozen=True)
class InputConfig:
    """How raw uint8 RGB pixels are normalised inside the network, and the input size.

    ``channel_order`` is the order the network's first convolution expects; ``pixel_mean``
    and ``pixel_std`` are in that order and on the 0..255 scale (TRI: BGR, mean
    ``(102.9801, 115.9465, 122.7717)``, std 1; torchvision ImageNet weights: RGB, mean
    ``(123.675, 116.28, 103.53)``, std ``(58.395, 57.12, 57.375)``).

    ``height`` / ``width`` is the network input size the Predictor resizes to; 0 means
    "the image's own size, padded up to a multiple of 128".
    """

    channel_order: Literal["rgb", "bgr"] = "bgr"
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    height: int = 0
    width: int = 0


@dataclass(frozen=True)
class DecoderConfig:
    """Thresholds of the parameter-free panoptic decoder (paper Sec. 3).

    Defaults are those the original implementation ships for its Cityscapes model, but for
    the two fields it does not have (``instance_score_thresh``, ``box_map_background``).

    Attributes:
        pre_nms_thresh: box-class probability a location needs to become a candidate.
        pre_nms_top_n: most candidates kept per FPN level before NMS.
        nms_thresh: IoU above which class-aware NMS suppresses a candidate (Eq. 4).
        max_detections: most queries kept after NMS, per image.
        mask_thresh: M_j = P_loc * P_sem > mask_thresh (Eq. 5, 7).
        overlap_threshold: an instance whose mask is already covered by more than this
            fraction of its area is dropped in fusion (Kirillov et al.).
        stuff_area: stuff segments smaller than this many pixels become void.
        iou_variant: ``"iou"``, the paper's IoU (Eq. 6), or ``"tri"``, the original code's
            ``(I+1)/(U+1) - (G-U)/G`` used by the converted TRI model.
        instance_score_thresh: detections scoring below this take no part in fusion
            (detectron2's panoptic fusion rule); 0 keeps every query. The default, 0.05, and
            ``box_map_background`` are the best PQ on a synthetic validation split
            (``benchmarks/decoder_pq.json``); the TRI preset keeps the original's 0.
        box_map_background: which pixels take a box in the dense box map B(x, y) (Eq. 14):
            ``"tri"``, the original code's rule, every pixel takes its best level's box (argmax
            over the levels alone); ``"exclude"``, pixels whose levelness argmax is the
            background take none (so they are in no mask).
    """

    pre_nms_thresh: float = 0.06
    pre_nms_top_n: int = 1000
    nms_thresh: float = 0.6
    max_detections: int = 100
    mask_thresh: float = 0.4
    overlap_threshold: float = 0.5
    stuff_area: int = 2048
    iou_variant: Literal["iou", "tri"] = "iou"
    instance_score_thresh: float = 0.05
    box_map_background: Literal["exclude", "tri"] = "tri"


CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetMeta:
    """What the network's output channels mean.

    Attributes:
        name: dataset name, for people.
        class_names: one name per semantic class; the semantic logits have one channel each.
        thing_ids: semantic ids of the thing classes, in box-class channel order: box-class
            channel ``k`` predicts semantic class ``thing_ids[k]``.
        category_ids: dataset category id of each semantic class (COCO panoptic files use
            these); empty means "the semantic id itself".
    """

    name: str = "cityscapes"
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    thing_ids: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)
    category_ids: tuple[int, ...] = ()

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
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Config:
        """Build from :meth:`to_dict`'s output; missing fields take their defaults.

        Raises:
            ConfigError: an unknown field, a value of the wrong type, or an invalid value,
                named as ``source: model.fpn_channels: ...``.
        """
        return _from_plain(cls, data, source)


def validate(cfg: Config) -> None:
    """Check the values that types alone cannot; raise :class:`ConfigError` naming the field."""
    m, i, d, ds = cfg.model, cfg.input, cfg.decoder, cfg.dataset
    problems: list[str] = []
    if m.backbone not in BACKBONES:
        problems.append(f"model.backbone: {m.backbone!r} is not one of {', '.join(BACKBONES)}")
    if not 0 <= m.trainable_backbone_layers <= 5:
        problems.append(f"model.trainable_backbone_layers: {m.trainable_backbone_layers} not in 0..5")
    for name in ("fpn_channels", "semantic_channels", "localization_channels", "tower_convs"):
        if getattr(m, name) < 1:
            problems.append(f"model.{name}: {getattr(m, name)} must be >= 1")
    for name in ("semantic_channels", "localization_channels"):
        if m.group_norm_group_size < 1 or getattr(m, name) % m.group_norm_group_size:
            problems.append(
                f"model.{name}: {getattr(m, name)} is not a multiple of "
                f"model.group_norm_group_size ({m.group_norm_group_size})"
            )
    if not 0.0 < m.prior_probability < 1.0:
        problems.append(f"model.prior_probability: {m.prior_probability} not in (0, 1)")
    if i.channel_order not in ("rgb", "bgr"):
        problems.append(f"input.channel_order: {i.channel_order!r}, expected 'rgb' or 'bgr'")
    if len(i.pixel_mean) != 3 or len(i.pixel_std) != 3:
        problems.append("input.pixel_mean / input.pixel_std: expected 3 values each")
    elif any(s <= 0 for s in i.pixel_std):
        problems.append(f"input.pixel_std: {list(i.pixel_std)} must all be > 0")
    for name in ("height", "width"):
        value = getattr(i, name)
        if value < 0 or value % SIZE_DIVISIBILITY:
            problems.append(f"input.{name}: {value}, expected 0 or a multiple of {SIZE_DIVISIBILITY}")
    for name in ("pre_nms_thresh", "nms_thresh", "mask_thresh", "overlap_threshold", "instance_score_thresh"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            problems.append(f"decoder.{name}: {getattr(d, name)} not in [0, 1]")
    for name in ("pre_nms_top_n", "max_detections"):
        if getattr(d, name) < 1:
            problems.append(f"decoder.{name}: {getattr(d, name)} must be >= 1")
    if d.stuff_area < 0:
        problems.append(f"decoder.stuff_area: {d.stuff_area} must be >= 0")
    if d.iou_variant not in ("iou", "tri"):
        problems.append(f"decoder.iou_variant: {d.iou_variant!r}, expected 'iou' or 'tri'")
    if d.box_map_background not in ("exclude", "tri"):
        problems.append(f"decoder.box_map_background: {d.box_map_background!r}, expected 'exclude' or 'tri'")
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


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, checking names and types field by field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}, expected some of {sorted(fields)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``hint`` and convert lists to tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r}, expected one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{k}]") for k, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{k}]") for k, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {hint!r}")  # a bug here, not user input


def load_yaml(path: str | Path) -> Config:
    """Read a :class:`Config` from a YAML file written by :func:`save_yaml` (or by hand)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return Config.from_dict(data if data is not None else {}, source=str(path))


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML; :func:`load_yaml` gives an equal :class:`Config` back."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


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
