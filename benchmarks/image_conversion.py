"""Image message conversion time on the CPU, per encoding, at camera resolution.

usage: python benchmarks/image_conversion.py [--height 1024] [--width 2048] [--runs 20]
           [--output benchmarks/image_conversion.json]

Times, median and p90 over ``--runs`` calls after one warm-up call:
- ``image_to_rgb`` for every supported encoding (``sensor_msgs/Image`` -> uint8 RGB), with
  whether the result is a zero-copy view of ``msg.data``;
- ``compressed_to_rgb`` for a JPEG (quality 90) and a PNG of the same image;
- the output builders (``semantic_to_msg``, ``instance_to_msg``, ``rgb_to_msg``);
- ways of filling an Image's ``data`` with an rgb8 array, which decided the builders'
  (``memoryview`` is so slow that it runs once, at the same size).
"""

from __future__ import annotations

import argparse
import array
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    compressed_to_rgb,
    image_to_rgb,
    instance_to_msg,
    rgb_to_msg,
    semantic_to_msg,
)
from rt_panoptic_ros.runtime.machine import write_benchmark


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()  # warm-up: first-call allocations, OpenCV's dispatch
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(percentile(times, 90), 3),
    }


def street_like(height: int, width: int) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, not like noise or a flat image."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200, yy / height * 180 + 40, 255 - (xx + yy) / (width + height) * 200], -1)
    noise = np.random.default_rng(0).normal(0, 6, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The bytes of ``rgb`` in ``encoding``, ``[H, row bytes]`` (mono16 little-endian)."""
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == "rgb8":
        return rgb.reshape(h, -1)
    if encoding == "bgr8":
        return rgb[..., ::-1].reshape(h, -1)
    if encoding in ("rgba8", "bgra8"):
        code = cv2.COLOR_RGB2RGBA if encoding == "rgba8" else cv2.COLOR_RGB2BGRA
        return cv2.cvtColor(rgb, code).reshape(h, -1)
    if encoding == "mono8":
        return grey
    if encoding == "mono16":
        return (grey.astype("<u2") * 257).view(np.uint8).reshape(h, -1)
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY).reshape(h, -1)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV).reshape(h, -1)
    pattern = encoding[len("bayer_") : -1].upper()  # bayer_rggb8 -> RGGB
    mosaic = np.empty((h, w), np.uint8)
    for letter, (dy, dx) in zip(pattern, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(letter)]
    return mosaic


def image_msg(rows: np.ndarray, width: int, encoding: str) -> Image:
    msg = Image(height=rows.shape[0], width=width, encoding=encoding, step=rows.shape[1])
    msg.data.frombytes(np.ascontiguousarray(rows))
    return msg


def fill_methods(rgb: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    """Ways to put an rgb8 array into ``Image.data`` (each builds a fresh message)."""

    def frombytes():
        msg = Image()
        msg.data.frombytes(rgb)

    def tobytes():
        Image().data = rgb.tobytes()

    def array_b():
        filled = array.array("B")
        filled.frombytes(rgb)
        Image().data = filled

    def memoryview_():
        Image().data = memoryview(rgb.reshape(-1))

    return {
        "msg.data.frombytes(array) [used]": timed(frombytes, runs),
        "msg.data = array.tobytes()": timed(tobytes, runs),
        "msg.data = array('B') filled by frombytes": timed(array_b, runs),
        "msg.data = memoryview(array)": timed(memoryview_, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--output", default=str(Path(__file__).with_name("image_conversion.json")))
    args = parser.parse_args()
    h, w, runs = args.height, args.width, args.runs
    rgb = street_like(h, w)

    inputs = {}
    for encoding in SUPPORTED_ENCODINGS:
        msg = image_msg(encode(rgb, encoding), w, encoding)
        out = image_to_rgb(msg)
        row = {
            "encoding": encoding,
            "zero_copy": bool(np.shares_memory(out, np.frombuffer(msg.data, np.uint8))),
            **timed(lambda msg=msg: image_to_rgb(msg), runs),
        }
        print(json.dumps(row), file=sys.stderr)
        inputs[encoding] = row

    compressed = {}
    for name, ext, params in [("jpeg", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]), ("png", ".png", [])]:
        msg = CompressedImage(format=f"rgb8; {name} compressed bgr8")
        msg.data.frombytes(cv2.imencode(ext, rgb[..., ::-1], params)[1])
        compressed[name] = {"bytes": len(msg.data), **timed(lambda msg=msg: compressed_to_rgb(msg), runs)}
        print(json.dumps({name: compressed[name]}), file=sys.stderr)

    header = Header(frame_id="camera")
    rng = np.random.default_rng(1)
    semantic8 = rng.integers(0, 19, (h, w)).astype(np.uint8)
    semantic32 = rng.integers(0, 300, (h, w)).astype(np.int32)
    instance = rng.integers(0, 50, (h, w)).astype(np.int16)
    outputs = {
        "semantic_to_msg uint8 -> mono8": timed(lambda: semantic_to_msg(semantic8, header), runs),
        "semantic_to_msg int32 -> mono16": timed(lambda: semantic_to_msg(semantic32, header), runs),
        "instance_to_msg int16 -> mono16": timed(lambda: instance_to_msg(instance, header), runs),
        "rgb_to_msg uint8 [H, W, 3] -> rgb8": timed(lambda: rgb_to_msg(rgb, header), runs),
    }
    print(json.dumps(outputs), file=sys.stderr)

    write_benchmark(
        args.output, "image message conversions (rt_panoptic_ros.ros.image_conversion), CPU",
        height=h, width=w, runs=runs, opencv=cv2.__version__, opencv_threads=cv2.getNumThreads(),
        numpy=np.__version__, image_to_rgb=list(inputs.values()), compressed_to_rgb=compressed,
        output_builders=outputs, filling_image_data_rgb8=fill_methods(rgb, runs),
    )  # fmt: skip


if __name__ == "__main__":
    main()
