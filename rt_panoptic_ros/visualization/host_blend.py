"""The overlay's colouring and blend on the host (numpy + OpenCV): the path of numpy maps.

Every pixel gets one small id (:func:`_combined_ids`: class id on stuff, one slot per instance,
one void id), so colouring is a single table look-up, done two pixels at a time
(:func:`_lookup`); the blend is one ``cv2.addWeighted`` and void pixels are copied back once.
Each of these passes only reads and writes the same rows, so a large picture is painted in two
bands of rows at once, on the calling thread and one helper thread (numpy and OpenCV let go of
the GIL). Working arrays are kept per thread (:func:`_scratch`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

_NARROW_VOID = 255  # the void id of one-byte combined ids (see _combined_ids)
_CV_INSTANCE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int32))
_SCRATCH = threading.local()
_SCRATCH_ARRAYS = 32  # working arrays kept per thread (about 10 per image size)
#: Pictures of at least this many pixels are painted in two bands of rows at once: below it,
#: handing a band to another thread costs more than it saves.
BANDED_PIXELS = 1 << 19
_BAND_POOL: list[ThreadPoolExecutor] = []  # the helper thread, started on first use
_BAND_POOL_LOCK = threading.Lock()


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
    """Whether these maps take one-byte combined ids (:func:`_combined_ids`); decided once per
    picture, so that every band of it has the ids the colour table was built for."""
    return (
        semantic.dtype == np.uint8
        and semantic.size > 1  # OpenCV reads a 1x1 array beside a number as two scalars
        and instance.dtype in _CV_INSTANCE_DTYPES
        and num_classes + num_segments <= _NARROW_VOID
    )


def _combined_ids(
    semantic: np.ndarray, instance: np.ndarray, num_classes: int, num_segments: int, narrow: bool
) -> tuple[np.ndarray, int]:
    """One id per pixel: the class id on stuff, ``num_classes + k - 1`` on instance k, and
    the returned void id where the class id is outside ``[0, num_classes)``.

    Returns:
        ``[H, W]`` uint8 ids with void 255 when ``narrow`` (:func:`_narrow_ids`: classes and
        instances fit one byte per pixel, so OpenCV does the work; a scratch array), else int32
        ids with void ``num_classes + num_segments``.
    """
    if narrow:
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


def blend_on_host(
    rgb: np.ndarray, semantic: np.ndarray, instance: np.ndarray, table: np.ndarray, num_classes: int,
    alpha: float,
) -> np.ndarray:  # fmt: skip
    """The colouring and blend on the host: combined ids (:func:`_combined_ids`), shrunk to
    ``rgb``'s size by nearest neighbour if it is smaller, coloured (:func:`_lookup`), blended
    with ``cv2.addWeighted``, void copied back; in two bands of rows when the picture is large."""
    num_segments = len(table) - num_classes
    narrow = _narrow_ids(semantic, instance, num_classes, num_segments)
    words = _colour_words(table, narrow)
    out = np.empty_like(rgb)
    if rgb.shape[:2] == semantic.shape:

        def paint(rows: slice) -> None:
            ids, void_id = _combined_ids(semantic[rows], instance[rows], num_classes, num_segments, narrow)
            _blend(rgb[rows], ids, void_id, words, alpha, out[rows])

    else:  # the ids of every output pixel need the whole map: combined once, then banded
        ids, void_id = _combined_ids(semantic, instance, num_classes, num_segments, narrow)
        small = _scratch("ids_small", rgb.shape[:2], ids.dtype)
        ids = cv2.resize(ids, rgb.shape[1::-1], dst=small, interpolation=cv2.INTER_NEAREST)

        def paint(rows: slice) -> None:
            _blend(rgb[rows], ids[rows], void_id, words, alpha, out[rows])

    _in_row_bands(len(rgb), len(rgb) * rgb.shape[1] >= BANDED_PIXELS, paint)
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
