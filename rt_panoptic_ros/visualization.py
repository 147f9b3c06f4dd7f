"""Colours for people: panoptic overlays shared by ``rt-panoptic-infer`` and the node.

Robots read the id images; these pictures are for humans (RViz, reports). Every class has a
fixed colour, instances of one class are told apart by shade, and labels are white on a dark
box so they stay readable on any background. numpy + OpenCV, no ROS; torch only for id maps
that are already torch tensors (imported by the caller, never here at import time).

How :func:`draw_overlay` stays cheap (``benchmarks/overlay.json``): every pixel gets one small
id (class id on stuff, one slot per instance, one void id), so colouring is a single table
lookup, done two pixels at a time; the blend is one ``cv2.addWeighted`` over the image and
void pixels are copied back once. Each of these passes only reads and writes the same rows, so
a large picture is painted in two bands of rows at once (this thread and one helper thread;
numpy and OpenCV let go of the GIL). Boxes and labels are drawn per instance with OpenCV.
"""

from __future__ import annotations

import colorsys
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from rt_panoptic_ros.panoptic.result import InstanceSegment

# The Cityscapes palette for the first 19 classes (familiar to anyone who has seen the
# benchmark), then golden-ratio hues for any further class.
_BASE_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
_GOLDEN = 0.618033988749895
_NARROW_VOID = 255  # the void id of one-byte combined ids (see _combined_ids)
_CV_INSTANCE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int32))
_SCRATCH = threading.local()
_SCRATCH_ARRAYS = 32  # working arrays kept per thread (about 10 per image size)
#: Pictures of at least this many pixels are painted in two bands of rows at once: below it,
#: handing a band to another thread costs more than it saves.
_BANDED_PIXELS = 1 << 19
_BAND_POOL: list[ThreadPoolExecutor] = []  # the helper thread, started on first use
_BAND_POOL_LOCK = threading.Lock()


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 RGB, the same colours for the same class ids every time."""
    extra = [
        np.array(colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.65, 0.95)) * 255
        for k in range(max(0, num_classes - len(_BASE_PALETTE)))
    ]
    colours = np.concatenate([_BASE_PALETTE, np.array(extra, dtype=np.uint8).reshape(-1, 3)])
    return colours[:num_classes]


def instance_colours(segments: Sequence[InstanceSegment], palette: np.ndarray) -> np.ndarray:
    """``[K, 3]`` uint8 RGB of ``segments``: the class colour, shaded by a golden-ratio sequence
    of the segment's ``id`` so that neighbouring instances of one class differ, and a tracked
    object (its ``id`` a track id) keeps its colour from frame to frame."""
    if not segments:
        return np.zeros((0, 3), np.uint8)
    shade = 0.55 + 0.45 * ((np.array([s.id for s in segments], dtype=np.float64) * _GOLDEN) % 1.0)
    base = palette[[min(s.category_id, len(palette) - 1) for s in segments]].astype(np.float32)
    return np.clip(base * shade[:, None] + (1 - shade[:, None]) * 40, 0, 255).astype(np.uint8)


def panoptic_colors(
    semantic: np.ndarray, instance: np.ndarray, segments: Sequence[InstanceSegment], palette: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Colour image of a panoptic result and the mask of its labelled pixels.

    Args:
        semantic: ``[H, W]`` class ids (values outside the palette are void).
        instance: ``[H, W]`` 0 or segment id.
        segments: the instances (``segments[k - 1]`` has id k).
        palette: ``[C, 3]`` from :func:`class_palette`.

    Returns:
        ``[H, W, 3]`` uint8 RGB and ``[H, W]`` bool (False on void).
    """
    num_classes = len(palette)
    if semantic.dtype == np.uint8:
        # OpenCV's per-channel table lookup: one fast pass (void and unknown ids -> black).
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: min(num_classes, 256), 0] = palette[:256]
        colours = cv2.LUT(cv2.merge([semantic, semantic, semantic]), lut)
    else:  # 16/32-bit ids (models with more than 255 classes)
        lut = np.zeros((max(int(semantic.max(initial=0)) + 1, num_classes), 3), np.uint8)
        lut[:num_classes] = palette
        colours = lut[semantic]
    if segments:
        instance_lut = np.concatenate([np.zeros((1, 3), np.uint8), instance_colours(segments, palette)])
        in_instance = (instance > 0) & (instance <= len(segments))
        colours[in_instance] = instance_lut[instance[in_instance]]  # only the instances' pixels
    labelled = semantic < num_classes
    return colours, labelled


def draw_overlay(
    image: np.ndarray,
    semantic: Any,
    instance: Any,
    segments: Sequence[InstanceSegment],
    class_names: Sequence[str],
    alpha: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
    scale: float = 1.0,
) -> np.ndarray:
    """The image blended with its panoptic colours, with instance boxes and labels.

    Stuff pixels take their class colour, pixels of instance k the shade of its class from
    :func:`instance_colours`, void pixels (class id outside ``class_names``) stay the image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB (numpy).
        semantic: ``[H, W]`` class ids, as in ``PanopticResult.semantic``: a numpy array or a
            torch tensor. CUDA tensors are coloured and blended on their device and one uint8
            image comes back; CPU tensors take the numpy path.
        instance: ``[H, W]`` 0 or k for ``segments[k - 1]`` (``PanopticResult.segment_index``:
            a tracked result's frame-local map, not its track ids), numpy or torch.
        segments: the instances in that order; their ``bbox`` is in ``image`` pixels, their
            ``id`` (a track id when tracked) picks the shade.
        class_names: one name per class id; also fixes the palette (:func:`class_palette`).
        alpha: weight of the colours (0 = image only, 1 = colours only); void stays image.
        boxes, labels: draw each instance's box in its class colour, and "name score" on it.
        scale: in (0, 1]; draw a smaller picture. The image is shrunk first (``INTER_AREA``),
            the id maps by nearest neighbour (the colours are then as drawing at full size and
            shrinking, but for edges between ids), boxes with them, so a small overlay costs
            little. Label text is sized for the picture drawn, like that of any image of its
            size: in proportion, but no smaller than font scale 0.4 (pictures under 360 rows).

    Returns:
        ``[round(H * scale), round(W * scale), 3]`` uint8 RGB, a new array.

    Raises:
        ValueError: ``scale`` outside (0, 1], or id maps of another size than the image.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    if tuple(semantic.shape) != (height, width) or tuple(instance.shape) != (height, width):
        raise ValueError(
            f"semantic {tuple(semantic.shape)} and instance {tuple(instance.shape)} must be the "
            f"image's size {(height, width)}"
        )
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    rgb = image if size == (height, width) else cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    palette = class_palette(len(class_names))
    table = np.concatenate([palette, instance_colours(segments, palette)])  # [C + K, 3], by id
    if _on_accelerator(semantic):
        out = _overlay_torch(rgb, semantic, instance, table, len(class_names), alpha)
    else:
        semantic, instance = np.asarray(semantic), np.asarray(instance)  # CPU tensors: no copy
        out = _overlay_numpy(rgb, semantic, instance, table, len(class_names), alpha)
    _draw_instances(out, segments, class_names, palette, (size[1] / width, size[0] / height), boxes, labels)
    return out


def _on_accelerator(ids: Any) -> bool:
    """Whether ``ids`` is a torch tensor off the CPU (torch is never imported here for this)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(ids, torch.Tensor) and ids.device.type != "cpu"


def _scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """This thread's working array ``name`` of this shape, kept for the next call (never handed
    to a caller). Fresh multi-megabyte arrays cost page faults on first touch: at 1024x2048
    that was a third of the overlay's time. About 30 MB per thread and image size; the arrays
    of the last few sizes are kept."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    key = (name, shape, np.dtype(dtype).str)
    array = arrays.get(key)
    if array is None:
        if len(arrays) >= _SCRATCH_ARRAYS:
            arrays.clear()
        array = arrays[key] = np.empty(shape, dtype)
    return array


def _narrow_ids(semantic: np.ndarray, instance: np.ndarray, num_classes: int, num_segments: int) -> bool:
    """Whether :func:`_combined_ids` gives one-byte ids for these maps."""
    return (
        semantic.dtype == np.uint8
        and semantic.size > 1  # OpenCV reads a 1x1 array beside a number as two scalars
        and instance.dtype in _CV_INSTANCE_DTYPES
        and num_classes + num_segments <= _NARROW_VOID
    )


def _combined_ids(
    semantic: np.ndarray, instance: np.ndarray, num_classes: int, num_segments: int
) -> tuple[np.ndarray, int]:
    """One id per pixel: the class id on stuff, ``num_classes + k - 1`` on instance k, and
    the returned void id where the class id is outside ``[0, num_classes)``.

    Returns:
        ``[H, W]`` uint8 ids with void 255 when classes and instances fit (one byte per pixel,
        so OpenCV does the work; a scratch array), else int32 ids with void
        ``num_classes + num_segments``.
    """
    if _narrow_ids(semantic, instance, num_classes, num_segments):
        # Instance slots are above every class id and void (255) above both, so two maxima
        # combine the maps: ids = max(semantic, slot where instance, 255 where void).
        shape = semantic.shape
        ids = _scratch("ids", shape, np.uint8)
        if num_segments:
            slot = _scratch("slot", shape, np.uint8)
            np.copyto(slot, instance, casting="unsafe")  # wraps above 255, but those are masked
            cv2.add(slot, num_classes - 1, dst=slot)
            thing = cv2.inRange(instance, 1, num_segments, dst=_scratch("thing", shape, np.uint8))
            cv2.max(semantic, cv2.bitwise_and(slot, thing, dst=slot), dst=ids)
        else:
            np.copyto(ids, semantic)
        void = cv2.compare(semantic, num_classes, cv2.CMP_GE, dst=_scratch("void", shape, np.uint8))
        cv2.max(ids, void, dst=ids)
        return ids, _NARROW_VOID
    void_id = num_classes + num_segments
    labelled = semantic < num_classes
    ids = np.where(labelled, semantic, void_id).astype(np.int32)
    if num_segments:
        thing = labelled & (instance > 0) & (instance <= num_segments)
        ids[thing] = instance[thing] + (num_classes - 1)
    return ids, void_id


def _colour_words(table: np.ndarray, narrow: bool) -> np.ndarray:
    """The look-up table of :func:`_lookup` for colours ``table`` ``[N, 3]``: one RGBx word per
    id, void (the last id) black. For one-byte ids (``narrow``), one uint64 word per *pair* of
    ids at ``[second * 256 + first]`` (512 KiB), so that two neighbouring ids, read as one
    uint16, fetch both colours at once."""
    rgbx = np.zeros((256 if narrow else len(table) + 1, 4), np.uint8)
    rgbx[: len(table), :3] = table
    words = rgbx.view(np.uint32).reshape(-1)
    if not narrow or sys.byteorder != "little":
        return words
    words64 = words.astype(np.uint64)
    return ((words64[:, None] << np.uint64(32)) | words64[None, :]).reshape(-1)


def _lookup(ids: np.ndarray, words: np.ndarray) -> np.ndarray:
    """``[h, w]`` ids to ``[h, w, 3]`` uint8 colours through :func:`_colour_words` (a scratch array)."""
    height, width = ids.shape
    flat = np.ascontiguousarray(ids).reshape(-1)
    if words.dtype == np.uint64 and flat.size % 2 == 0:  # two pixels per look-up
        index = _scratch("index", (flat.size // 2,), np.intp)
        np.copyto(index, flat.view(np.uint16))  # take() would convert, into a fresh array
        packed = _scratch("packed", index.shape, np.uint64)
        np.take(words, index, out=packed, mode="wrap")  # "raise" would copy ``out``
    else:  # pair words [0 * 256 + id] hold id's own word in their low half
        single = words.view(np.uint32)[:512:2] if words.dtype == np.uint64 else words
        packed = np.take(single, flat)
    rgba = packed.view(np.uint8).reshape(height, width, 4)
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=_scratch("colours", (height, width, 3), np.uint8))


def _overlay_numpy(
    rgb: np.ndarray, semantic: np.ndarray, instance: np.ndarray, table: np.ndarray, num_classes: int,
    alpha: float,
) -> np.ndarray:  # fmt: skip
    """The colouring and blend on the host: combined ids (:func:`_combined_ids`), shrunk to
    ``rgb``'s size by nearest neighbour if it is smaller, coloured (:func:`_lookup`), blended
    with ``cv2.addWeighted``, void copied back; in two bands of rows when the picture is large."""
    num_segments = len(table) - num_classes
    words = _colour_words(table, _narrow_ids(semantic, instance, num_classes, num_segments))
    out = np.empty_like(rgb)
    if rgb.shape[:2] == semantic.shape:

        def paint(rows: slice) -> None:
            ids, void_id = _combined_ids(semantic[rows], instance[rows], num_classes, num_segments)
            _blend(rgb[rows], ids, void_id, words, alpha, out[rows])

    else:  # the ids of every output pixel need the whole map: combined once, then banded
        ids, void_id = _combined_ids(semantic, instance, num_classes, num_segments)
        small = _scratch("ids_small", rgb.shape[:2], ids.dtype)
        ids = cv2.resize(ids, rgb.shape[1::-1], dst=small, interpolation=cv2.INTER_NEAREST)

        def paint(rows: slice) -> None:
            _blend(rgb[rows], ids[rows], void_id, words, alpha, out[rows])

    _in_row_bands(len(rgb), len(rgb) * rgb.shape[1] >= _BANDED_PIXELS, paint)
    return out


def _blend(
    rgb: np.ndarray, ids: np.ndarray, void_id: int, words: np.ndarray, alpha: float, out: np.ndarray
) -> None:
    """``out`` = ``cv2.addWeighted`` of ``rgb`` and the colours of ``ids``; void keeps ``rgb``."""
    cv2.addWeighted(rgb, 1.0 - alpha, _lookup(ids, words), alpha, 0.0, dst=out)
    void = np.equal(ids, void_id, out=_scratch("void_out", ids.shape, np.bool_))
    cv2.copyTo(rgb, void.view(np.uint8), out)  # void keeps the image


def _in_row_bands(height: int, banded: bool, paint: Callable[[slice], None]) -> None:
    """``paint`` over rows ``[0, height)``: in two halves at once (here and on the helper
    thread) when ``banded``, else in one call."""
    if not banded or height < 2:
        paint(slice(0, height))
        return
    with _BAND_POOL_LOCK:
        if not _BAND_POOL:
            _BAND_POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay-band"))
    half = height // 2
    lower = _BAND_POOL[0].submit(paint, slice(half, height))
    paint(slice(0, half))
    lower.result()


def _overlay_torch(
    rgb: np.ndarray, semantic: Any, instance: Any, table: np.ndarray, num_classes: int, alpha: float
) -> np.ndarray:
    """The colouring and blend of :func:`_overlay_numpy` in torch ops on ``semantic``'s device:
    the image goes up once, one uint8 image comes back.

    The id maps are shrunk to ``rgb``'s size by ``cv2.resize``'s nearest-neighbour rule, and
    each output byte is read from :func:`_blend_table` (``cv2.addWeighted`` of every image
    value with every id's colour), so the picture is the host's, byte for byte, whatever the
    device's float arithmetic.
    """
    import torch

    device = semantic.device
    num_segments = len(table) - num_classes
    void_id = len(table)
    instance = torch.as_tensor(instance, device=device)
    height, width = rgb.shape[:2]
    if tuple(semantic.shape) != (height, width):
        rows = torch.from_numpy(_nearest(semantic.shape[0], height)).to(device)
        cols = torch.from_numpy(_nearest(semantic.shape[1], width)).to(device)
        semantic = semantic.index_select(0, rows).index_select(1, cols)
        instance = instance.index_select(0, rows).index_select(1, cols)
    semantic, instance = semantic.to(torch.int64), instance.to(torch.int64)  # [h, w]
    labelled = (semantic >= 0) & (semantic < num_classes)
    thing = labelled & (instance > 0) & (instance <= num_segments)
    ids = torch.where(labelled, semantic, void_id)
    ids = torch.where(thing, instance + (num_classes - 1), ids)
    blend = torch.from_numpy(_blend_table(table, alpha)).to(device).reshape(-1)  # [(N + 1) * 3 * 256]
    image = torch.from_numpy(rgb).to(device).to(torch.int64)  # [h, w, 3]
    channel = torch.arange(3, device=device) * 256
    index = (ids[..., None] * 768 + channel) + image  # [h, w, 3] into [id, channel, value]
    return blend[index].cpu().numpy()


def _blend_table(table: np.ndarray, alpha: float) -> np.ndarray:
    """``[N + 1, 3, 256]`` uint8: ``cv2.addWeighted`` of image value v (weight ``1 - alpha``)
    with channel c of colour ``table[id]`` (weight ``alpha``) at ``[id, c, v]``; the last id
    is void, where the value stays. Rows of 256 bytes: OpenCV's vector code does every entry."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (len(table), 3, 256))
    colours = np.broadcast_to(table[:, :, None], (len(table), 3, 256))
    blended = cv2.addWeighted(
        np.ascontiguousarray(values).reshape(-1, 256), 1.0 - alpha,
        np.ascontiguousarray(colours).reshape(-1, 256), alpha, 0.0,
    ).reshape(len(table), 3, 256)  # fmt: skip
    return np.concatenate([blended, values[:1]])


def _nearest(source: int, target: int) -> np.ndarray:
    """``cv2.resize``'s ``INTER_NEAREST`` source index of each of ``target`` outputs (int64)."""
    step = 1.0 / (target / source)
    return np.minimum(np.floor(np.arange(target) * step), source - 1).astype(np.int64)


def _draw_instances(
    out: np.ndarray,
    segments: Sequence[InstanceSegment],
    class_names: Sequence[str],
    palette: np.ndarray,
    scale_xy: tuple[float, float],
    boxes: bool,
    labels: bool,
) -> None:
    """Each instance's box in its class colour and its "name score" label, in place on ``out``
    (boxes given in the source image's pixels, ``scale_xy`` from there to ``out``)."""
    if not (boxes or labels):
        return
    font_scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, round(font_scale * 2))
    sx, sy = scale_xy
    for s in segments:
        x1, y1, x2, y2 = (round(v * f) for v, f in zip(s.bbox, (sx, sy, sx, sy), strict=True))
        colour = tuple(int(c) for c in palette[min(s.category_id, len(palette) - 1)])
        if boxes:
            cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        if labels:
            name = class_names[s.category_id] if s.category_id < len(class_names) else str(s.category_id)
            _label(out, f"{name} {s.score:.2f}", (x1, y1), font_scale, thickness)


def _label(image: np.ndarray, text: str, corner: tuple[int, int], scale: float, thickness: int) -> None:
    """White text on a dark box at the top-left ``corner`` of a box, kept inside the image."""
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(corner[0], 0), max(0, image.shape[1] - w - 2))
    y = max(corner[1], h + baseline + 2)
    cv2.rectangle(image, (x, y - h - baseline - 2), (x + w + 2, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip
