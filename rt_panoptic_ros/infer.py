"""Offline inference on image files into a COCO panoptic predictions folder.

Layout written under ``OUT`` (scored directly by ``rt-panoptic-eval`` / panopticapi)::

    OUT/panoptic/<stem>.png   segment ids as R + 256 G + 256^2 B
    OUT/panoptic.json         images, annotations (file_name, image_id = stem, segments_info), categories
    OUT/overlay/<stem>.png    the image blended with its panoptic colours, boxes and labels

With tracking (``rt-panoptic-infer --track``) the images are frames of one video in name
order: an instance keeps its track id from frame to frame as its segment id, and stuff class c
is segment ``TRACKED_STUFF_BASE + c`` in every frame (video panoptic datasets' convention, what
``rt-panoptic-eval --video`` reads).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt_panoptic_ros.atomic_files import atomic_write
from rt_panoptic_ros.errors import DatasetError, InputError
from rt_panoptic_ros.image_io import read_rgb, write_panoptic_png, write_rgb
from rt_panoptic_ros.panoptic.coco_format import categories, to_coco_panoptic
from rt_panoptic_ros.panoptic.fusion import void_label
from rt_panoptic_ros.runtime.predictor import Predictor
from rt_panoptic_ros.tracking import TrackingSettings
from rt_panoptic_ros.visualization import draw_overlay

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class InferenceReport:
    """What a run did: images written, images that failed (with why), latency per image."""

    written: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def list_images(source: str | Path) -> list[Path]:
    """The image files of a folder (sorted, not recursive), or ``[source]`` for one file.

    Raises:
        InputError: ``source`` does not exist, or the folder holds no image.
    """
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InputError(f"{source}: no such file or folder")
    # Broken symbolic links are listed too, so that they fail by name like any unreadable image.
    images = sorted(
        p for p in source.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise InputError(f"{source}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise InputError(f"{source}: several images share the stem(s) {duplicates}; image ids must be unique")
    return images


def prepare_output(output: str | Path, overwrite: bool) -> None:
    """Refuse to mix a new run into an old predictions folder, unless ``overwrite``.

    With ``overwrite``, the old run's files (``panoptic/``, ``overlay/``, ``panoptic.json``)
    are removed first; anything else in the folder is left alone.

    Raises:
        DatasetError: ``output`` is a file, or a non-empty folder and ``overwrite`` is False.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise DatasetError(f"{output}: folder is not empty (use --overwrite to replace its predictions)")
        for old in ("panoptic", "overlay"):
            shutil.rmtree(output / old, ignore_errors=True)
        (output / "panoptic.json").unlink(missing_ok=True)


def run_inference(
    predictor: Predictor,
    images: list[Path],
    output: str | Path,
    progress: Callable[[int], Any] | None = None,
    on_error: Callable[[str], None] | None = None,
    tracking: TrackingSettings | None = None,
    sequence_of: Callable[[Path], object] | None = None,
) -> InferenceReport:
    """Segment ``images`` and write the predictions folder ``output``.

    Images that cannot be read are reported through ``on_error`` and skipped; the others are
    written, and ``panoptic.json`` lists exactly those.

    Args:
        progress: called with the latency (ms) of each image, e.g. a progress bar's update.
        on_error: called with a one-line message per failed image.
        tracking: the images are frames of one video, in this order: track the instances
            (``None``: each image on its own, ids 1..K).
        sequence_of: with ``tracking``, an image's video (any value): the tracks start afresh
            where it changes, so several videos can be written into one folder. ``None``: all
            images are one video.
    """
    output = Path(output)
    (output / "panoptic").mkdir(parents=True, exist_ok=True)
    (output / "overlay").mkdir(parents=True, exist_ok=True)
    cfg = predictor.cfg
    void = void_label(cfg.dataset.num_classes)
    report = InferenceReport()
    tracker = tracking.tracker() if tracking is not None and tracking.enabled else None
    sequence = None
    annotations, image_entries = [], []
    for path in images:
        try:
            rgb = read_rgb(path)
        except InputError as error:
            report.failed.append(str(error))
            if on_error:
                on_error(str(error))
            continue
        start = time.perf_counter()
        result = predictor(rgb)
        if tracker is not None:
            video = sequence_of(path) if sequence_of is not None else None
            if video != sequence:
                sequence = video
                tracker.reset()
            result = tracker.update(result)
        latency = (time.perf_counter() - start) * 1000
        ids, segments_info = to_coco_panoptic(result, cfg, void)
        file_name = f"{path.stem}.png"
        write_panoptic_png(output / "panoptic" / file_name, ids)
        semantic, segment_index = result.semantic.numpy(), result.segment_index.numpy()
        overlay = draw_overlay(rgb, semantic, segment_index, result.segments, cfg.dataset.class_names)
        write_rgb(output / "overlay" / file_name, overlay)
        image_entries.append(
            {"id": path.stem, "file_name": path.name, "height": rgb.shape[0], "width": rgb.shape[1]}
        )
        annotations.append({"image_id": path.stem, "file_name": file_name, "segments_info": segments_info})
        report.written.append(path.stem)
        report.latencies_ms.append(latency)
        if progress:
            progress(latency)
    document = {"images": image_entries, "annotations": annotations, "categories": categories(cfg)}
    _write_json_atomically(output / "panoptic.json", document)
    return report


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(document).encode()))
