"""rt_panoptic_ros.ros.image_conversion on real sensor_msgs messages and real OpenCV codecs.

Every encoding is built by hand from a known RGB image (YUV with the BT.601 equations,
Bayer mosaics by sampling the channels), with and without ``step`` padding, and converted
back; the padding bytes are filled with junk, so reading them would show.
"""

from __future__ import annotations

import ast
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.errors import ImageError, InputError
from rt_panoptic_ros.ros import image_conversion as ic
from rt_panoptic_ros.ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    check_pixels,
    compressed_to_rgb,
    decoded_size,
    image_to_rgb,
    instance_to_msg,
    rgb_to_msg,
    semantic_to_msg,
)

H, W = 6, 10  # small, and not square, so that a transposed result cannot pass
PAD_BYTE = 0xA5


def known_rgb(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def header() -> Header:
    return Header(stamp=Time(sec=1_700_000_000, nanosec=42), frame_id="camera_optical")


def image_msg(encoding: str, rows: np.ndarray, width: int, pad: int = 0, bigendian: int = 0) -> Image:
    """An Image whose rows are ``rows`` (``[H, row bytes]`` uint8) plus ``pad`` junk bytes each."""
    height, row_bytes = rows.shape
    buffer = np.full((height, row_bytes + pad), PAD_BYTE, np.uint8)
    buffer[:, :row_bytes] = rows
    msg = Image(height=height, width=width, encoding=encoding, step=row_bytes + pad, is_bigendian=bigendian)
    msg.data = buffer.tobytes()
    return msg


def rows_of(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1).view(np.uint8)


# --- exact encodings ----------------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_are_exact(encoding, encode, pad):
    rgb = known_rgb()
    out = image_to_rgb(image_msg(encoding, rows_of(encode(rgb)), W, pad))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "rgba8"])
def test_rgb8_and_rgba8_are_zero_copy_views(encoding, pad):
    rgb = known_rgb()
    pixels = rgb if encoding == "rgb8" else np.dstack([rgb, np.zeros((H, W), np.uint8)])
    msg = image_msg(encoding, rows_of(pixels), W, pad)
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(out, rgb)
    if encoding == "rgb8" and pad == 0:
        assert out.flags.c_contiguous


def test_converted_encodings_are_copies():
    msg = image_msg("bgr8", rows_of(known_rgb()), W)
    assert not np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("pad", [0, 1])
def test_mono8_is_replicated(pad):
    grey = known_rgb()[..., 0]
    out = image_to_rgb(image_msg("mono8", grey, W, pad))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("pad", [0, 1, 4])  # an odd step puts every uint16 off its alignment
@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_keeps_the_high_byte_in_either_byte_order(bigendian, pad):
    values = np.random.default_rng(3).integers(0, 65536, (H, W)).astype(np.uint16)
    values[0, :3] = [0x0000, 0x12FF, 0xFF12]  # high and low bytes told apart
    dtype = ">u2" if bigendian else "<u2"
    msg = image_msg("mono16", values.astype(dtype).view(np.uint8).reshape(H, -1), W, pad, bigendian)
    out = image_to_rgb(msg)
    expected = (values >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))
    assert list(out[0, :3, 0]) == [0x00, 0x12, 0xFF]


def test_mono16_byte_order_matters():
    """The same bytes read with the other ``is_bigendian`` give another image."""
    values = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000 + 7
    rows = values.astype("<u2").view(np.uint8).reshape(H, -1)
    little = image_to_rgb(image_msg("mono16", rows, W, 0, 0))
    big = image_to_rgb(image_msg("mono16", rows, W, 0, 1))
    assert not np.array_equal(little, big)


# --- YUV 4:2:2 -------------------------------------------------------------------------------


def bt601_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes (limited range, ITU-R BT.601), computed here, independent of OpenCV."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return tuple(np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))


def packed_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """``[H, W * 2]`` bytes in ``order`` "UYVY" or "YUYV"; chroma from each pair's left pixel."""
    y, u, v = bt601_yuv(rgb)
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u[:, 0::2], "V": v[:, 0::2]}
    names = ["U", "Y0", "V", "Y1"] if order == "UYVY" else ["Y0", "U", "Y1", "V"]
    return np.stack([planes[n] for n in names], axis=-1).reshape(rgb.shape[0], -1)


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")],
)
def test_yuv422_within_two_levels(encoding, order, pad):
    # Each horizontal pair shares one colour, so subsampled chroma loses nothing and the
    # only error is rounding Y, U and V to integers (measured: at most 2 levels).
    rgb = np.repeat(known_rgb(H, W // 2, seed=1), 2, axis=1)
    out = image_to_rgb(image_msg(encoding, packed_422(rgb, order), W, pad))
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_yuv422_byte_order_matters():
    rgb = np.repeat(known_rgb(H, W // 2, seed=1), 2, axis=1)
    out = image_to_rgb(image_msg("yuyv", packed_422(rgb, "UYVY"), W))
    assert np.abs(out.astype(int) - rgb).max() > 50


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_odd_width_is_rejected(encoding):
    msg = image_msg(encoding, np.zeros((H, 9 * 2), np.uint8), 9)
    with pytest.raises(ImageError, match="width 9 is odd"):
        image_to_rgb(msg)


# --- Bayer ---------------------------------------------------------------------------------


def ramps(height: int = 12, width: int = 16) -> np.ndarray:
    """R rises to the right, B downwards, G flat: bilinear demosaicing is exact inside."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([40 + 10 * xx, np.full_like(xx, 120), 30 + 12 * yy], axis=-1).astype(np.uint8)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer mosaic whose top-left 2x2 cell reads ``pattern`` row by row ("RGGB" ...)."""
    channel = {"R": 0, "G": 1, "B": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for letter, (dy, dx) in zip(pattern, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return out


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GBRG", "GRBG"])
def test_bayer_patterns_match_their_ros_names(pattern, pad):
    rgb = ramps()
    out = image_to_rgb(image_msg(f"bayer_{pattern.lower()}8", mosaic(rgb, pattern), rgb.shape[1], pad))
    assert out.shape == rgb.shape
    # The border is interpolated from fewer neighbours; the inside is exact for ramps.
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_bayer_wrong_pattern_is_visible():
    rgb = ramps()
    out = image_to_rgb(image_msg("bayer_bggr8", mosaic(rgb, "RGGB"), rgb.shape[1]))
    assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() > 30


def test_bayer_odd_size_converts():
    rgb = ramps(7, 9)
    out = image_to_rgb(image_msg("bayer_rggb8", mosaic(rgb, "RGGB"), 9))
    assert out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


# --- bad raw images ------------------------------------------------------------------------


def test_every_supported_encoding_is_converted():
    """The list the error message gives is the list that works."""
    for encoding in SUPPORTED_ENCODINGS:
        bpp = ic.BYTES_PER_PIXEL[encoding]
        out = image_to_rgb(image_msg(encoding, np.zeros((4, 4 * bpp), np.uint8), 4))
        assert out.shape == (4, 4, 3), encoding


@pytest.mark.parametrize("encoding", ["rgb16", "32FC1", "", "RGB8", "nv12"])
def test_unknown_encoding_lists_the_supported_ones(encoding):
    msg = image_msg(encoding, np.zeros((2, 6), np.uint8), 2)
    with pytest.raises(ImageError, match="unknown image encoding") as info:
        image_to_rgb(msg)
    assert repr(encoding) in str(info.value)
    assert all(name in str(info.value) for name in SUPPORTED_ENCODINGS)


def bad(height=H, width=W, step=W * 3, size=None, encoding="rgb8") -> Image:
    msg = Image(height=height, width=width, step=step, encoding=encoding)
    msg.data = bytes(step * height if size is None else size)
    return msg


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (bad(0, 0, 0), r"empty rgb8 image: 0x0"),
        (bad(0, W), r"empty rgb8 image: 10x0"),
        (bad(H, 0, 0), r"empty rgb8 image: 0x6"),
        (bad(1, 20000, 60000), r"absurd rgb8 image size 20000x1"),
        (bad(20000, 1, 3), r"absurd rgb8 image size 1x20000"),
        # 768 MiB claimed, no bytes sent: refused before anything is allocated
        (bad(16384, 16384, 16384 * 3, size=0), r"exceeds the limit of 268435456 bytes"),
        (bad(step=W * 3 - 1), r"step 29 is shorter than a row of 10 rgb8 pixels \(30 bytes\)"),
        (bad(step=W * 2, encoding="mono16", size=W * 2 * H - 1), r"holds 119 bytes, but step x height"),
        (bad(size=W * 3 * H + 1), r"holds 181 bytes, but step x height = 30 x 6 = 180"),
        (bad(size=0), r"holds 0 bytes"),
    ],
)
def test_inconsistent_images_are_rejected(msg, message):
    with pytest.raises(ImageError, match=message):
        image_to_rgb(msg)


def test_image_error_is_an_input_error():
    """The node catches RTPanopticError; callers of the predictor catch InputError / ValueError."""
    with pytest.raises(InputError):
        image_to_rgb(bad(0, 0, 0))
    assert issubclass(ImageError, ValueError)


# --- compressed ----------------------------------------------------------------------------


def compressed(data: bytes | np.ndarray, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = bytes(data)
    return msg


def encoded(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def smooth_rgb() -> np.ndarray:
    """A photo-like image (smooth), which JPEG at quality 100 keeps to a few levels."""
    yy, xx = np.mgrid[0:48, 0:64]
    return np.stack([xx * 4, yy * 5, 255 - xx * 2 - yy], axis=-1).astype(np.uint8)


def test_png_is_exact_and_rgb():
    rgb = known_rgb(17, 23)
    out = compressed_to_rgb(compressed(encoded(".png", rgb[..., ::-1]), "bgr8; png compressed bgr8"))
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_within_a_few_levels():
    rgb = smooth_rgb()
    data = encoded(".jpg", rgb[..., ::-1], cv2.IMWRITE_JPEG_QUALITY, 100)
    out = compressed_to_rgb(compressed(data, "rgb8; jpeg compressed bgr8"))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 1.5
    assert np.abs(out.astype(int) - rgb).max() <= 8
    # channel order: a swap of R and B would be off by ~100 on average
    assert np.abs(out.astype(int) - rgb[..., ::-1]).mean() > 30


def test_format_string_is_not_trusted():
    rgb = known_rgb(8, 8)
    out = compressed_to_rgb(compressed(encoded(".png", rgb[..., ::-1]), "jpeg"))
    np.testing.assert_array_equal(out, rgb)


def test_grey_and_16_bit_png():
    grey = known_rgb(9, 11)[..., 0]
    out = compressed_to_rgb(compressed(encoded(".png", grey), "mono8; png compressed mono8"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    deep = np.random.default_rng(2).integers(0, 65536, (9, 11)).astype(np.uint16)
    out = compressed_to_rgb(compressed(encoded(".png", deep), "mono16; png compressed mono16"))
    np.testing.assert_array_equal(out[..., 0], (deep >> 8).astype(np.uint8))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (the rest is a 1x1 image's)."""
    data = bytearray(encoded(".png", np.zeros((1, 1, 3), np.uint8)))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(".jpg", np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_header_readers_see_the_real_size():
    jpeg = encoded(".jpg", np.zeros((33, 47, 3), np.uint8))
    png = encoded(".png", np.zeros((33, 47, 3), np.uint8))
    assert ic._jpeg_size(np.frombuffer(jpeg, np.uint8)) == (33, 47)
    assert ic._png_size(np.frombuffer(png, np.uint8)) == (33, 47)


JPEG = encoded(".jpg", smooth_rgb()[..., ::-1])
PNG = encoded(".png", smooth_rgb()[..., ::-1])


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "jpeg", r"empty compressed image \(format 'jpeg'\)"),
        (JPEG[: len(JPEG) // 2], "jpeg", r"corrupt jpeg image: OpenCV cannot decode"),
        (PNG[: len(PNG) // 2], "png", r"corrupt png image: OpenCV cannot decode"),
        (JPEG[:3] + bytes(200), "jpeg", r"corrupt jpeg image: no readable header"),
        (b"not an image", "rgb8; jpeg compressed bgr8", r"corrupt jpeg image: its data does not start"),
        (b"not an image", "png", r"corrupt png image: its data does not start"),
        (encoded(".bmp", smooth_rgb()), "bmp", r"unsupported compressed format 'bmp' \(supported: jpeg, png"),
        (PNG, "16UC1; compressedDepth png", r"unsupported compressed format .*: a depth image"),
        (png_with_size(100_000, 10), "png", r"absurd png image size 100000x10"),
        (png_with_size(0, 10), "png", r"empty png image: 0x10"),
        (jpeg_with_size(60_000, 60_000), "jpeg", r"absurd jpeg image size 60000x60000"),
        (png_with_size(16384, 16384), "png", r"png image of 16384x16384 exceeds the limit"),
    ],
)
def test_bad_compressed_images_are_rejected(data, fmt, message):
    with pytest.raises(ImageError, match=message):
        compressed_to_rgb(compressed(data, fmt))


# --- output builders -----------------------------------------------------------------------


def round_trip(msg: Image) -> Image:
    """Through real CDR, as a subscriber receives it."""
    return deserialize_message(serialize_message(msg), Image)


def assert_header_and_size(msg: Image, height: int, width: int) -> None:
    assert msg.header == header()
    assert (msg.height, msg.width) == (height, width)
    assert msg.is_bigendian == 0
    assert len(msg.data) == msg.step * msg.height


def test_semantic_uint8_is_mono8():
    semantic = np.random.default_rng(4).integers(0, 256, (H, W)).astype(np.uint8)
    msg = round_trip(semantic_to_msg(semantic, header()))
    assert msg.encoding == "mono8" and msg.step == W
    assert_header_and_size(msg, H, W)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(H, W), semantic)


def test_semantic_of_a_large_model_is_mono16():
    semantic = np.random.default_rng(5).integers(0, 300, (H, W)).astype(np.int32)
    semantic[0, 0] = 65535  # void of models with more than 255 classes
    msg = round_trip(semantic_to_msg(semantic, header()))
    assert msg.encoding == "mono16" and msg.step == 2 * W
    assert_header_and_size(msg, H, W)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<u2").reshape(H, W), semantic)


def test_instance_is_mono16():
    instance = np.random.default_rng(6).integers(0, 40, (H, W)).astype(np.int16)
    msg = round_trip(instance_to_msg(instance, header()))
    assert msg.encoding == "mono16" and msg.step == 2 * W
    assert_header_and_size(msg, H, W)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<u2").reshape(H, W), instance)


def test_rgb_round_trip_through_cdr_and_back():
    rgba = np.dstack([known_rgb(), np.zeros((H, W), np.uint8)])
    rgb = rgba[..., :3]  # a strided view: the builder must not need C order
    msg = round_trip(rgb_to_msg(rgb, header()))
    assert msg.encoding == "rgb8" and msg.step == 3 * W
    assert_header_and_size(msg, H, W)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_builders_keep_the_header_object_and_big_sizes():
    big = np.zeros((1024, 2048), np.uint8)
    head = header()
    msg = semantic_to_msg(big, head)
    assert msg.header is head
    assert (msg.height, msg.width, msg.step, len(msg.data)) == (1024, 2048, 2048, 1024 * 2048)


@pytest.mark.parametrize(
    ("build", "array", "message"),
    [
        (instance_to_msg, np.full((2, 2), -1, np.int32), r"instance map holds values in -1..-1"),
        (instance_to_msg, np.full((2, 2), 70000, np.int64), r"values in 70000..70000; mono16 holds"),
        (semantic_to_msg, np.zeros((2, 2), np.float32), r"semantic map must hold integers"),
        (semantic_to_msg, np.zeros((2, 2, 1), np.uint8), r"semantic map must be an \[H, W\] array"),
        (semantic_to_msg, np.zeros((0, 5), np.uint8), r"empty mono8 image: 5x0"),
        (rgb_to_msg, np.zeros((2, 2, 3), np.float32), r"uint8 \[H, W, 3\] array, got float32"),
        (rgb_to_msg, np.zeros((2, 2, 4), np.uint8), r"got uint8 array of shape \[2, 2, 4\]"),
        (rgb_to_msg, [[1, 2, 3]], r"got list"),
    ],
)
def test_builders_reject_bad_arrays(build, array, message):
    with pytest.raises(ImageError, match=message):
        build(array, header())


# --- what the module may import ------------------------------------------------------------


def test_module_imports_no_torch():
    """Only numpy, OpenCV, the message types and our errors: the node's thin edge."""
    tree = ast.parse(Path(ic.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"__future__", "cv2", "numpy", "sensor_msgs.msg", "std_msgs.msg", "rt_panoptic_ros.errors"}
    assert imported <= allowed, imported - allowed


# --- sizes before decoding -----------------------------------------------------------------

HEADER_SIZES = [(1, 1), (6, 10), (47, 33), (480, 640), (1080, 1920)]


@pytest.mark.parametrize("height, width", HEADER_SIZES)
@pytest.mark.parametrize(
    "ext, params",
    [
        (".png", ()),
        (".jpg", ()),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),  # SOF2
        (".jpg", (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)),
    ],
)
@pytest.mark.parametrize("grey", [False, True])
def test_decoded_size_reads_the_header(height, width, ext, params, grey):
    image = np.zeros((height, width) if grey else (height, width, 3), np.uint8)
    msg = compressed(encoded(ext, image, *params), ext[1:])
    assert decoded_size(msg) == (height, width)
    check_pixels(msg, height * width)  # at the limit: accepted


def test_decoded_size_of_a_16_bit_png_and_a_raw_image():
    assert decoded_size(compressed(encoded(".png", np.zeros((5, 7), np.uint16)), "png")) == (5, 7)
    assert decoded_size(image_msg("rgb8", np.zeros((H, W * 3), np.uint8), W)) == (H, W)


def test_progressive_jpeg_is_sof2():
    data = encoded(".jpg", smooth_rgb(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert b"\xff\xc2" in data and b"\xff\xc0" not in data  # what the size test above reads


def test_decoded_size_skips_segments_before_the_frame_header():
    """APPn (EXIF-like), COM and fill bytes before SOF0, as cameras write them."""
    data = encoded(".jpg", smooth_rgb())
    app1 = b"\xff\xe1" + (2 + 300).to_bytes(2, "big") + bytes(300)
    comment = b"\xff\xfe" + (2 + 5).to_bytes(2, "big") + b"hello"
    patched = data[:2] + app1 + comment + b"\xff\xff" + data[2:]
    assert decoded_size(compressed(patched, "jpeg")) == (48, 64)
    assert compressed_to_rgb(compressed(patched, "jpeg")).shape == (48, 64, 3)


def png_declaring(height: int, width: int) -> bytes:
    """A valid 8x8 PNG whose IHDR (and CRC) is patched to declare another size."""
    data = bytearray(encoded(".png", np.zeros((8, 8, 3), np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # over type + IHDR data
    return bytes(data)


def test_check_pixels_refuses_a_tiny_png_declaring_a_huge_image():
    data = png_declaring(5400, 16384)
    assert len(data) < 200
    msg = compressed(data, "png")
    assert decoded_size(msg) == (5400, 16384)
    with pytest.raises(ImageError) as error:
        check_pixels(msg, 8192 * 4096)
    assert str(error.value) == "image 16384x5400 (88.5 MP) exceeds max_input_pixels 33.6 MP"
    # The patched header is consistent (CRC included): OpenCV reads it and finds too little data.
    assert cv2.imdecode(np.frombuffer(png_declaring(16, 8), np.uint8), cv2.IMREAD_UNCHANGED) is None


def test_check_pixels_refuses_raw_images_by_their_fields():
    msg = image_msg("rgb8", np.zeros((H, W * 3), np.uint8), W)
    check_pixels(msg, H * W)
    check_pixels(msg, 0)  # 0 = no limit
    with pytest.raises(ImageError, match=rf"^image {W}x{H} \(0.0 MP\) exceeds max_input_pixels"):
        check_pixels(msg, H * W - 1)


def test_check_pixels_zero_is_no_limit_even_for_huge_headers():
    check_pixels(compressed(png_declaring(100_000, 100_000), "png"), 0)


@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIH", "png"),  # truncated IHDR
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "png"),  # no IHDR first
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),  # truncated before any frame header
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(8), "jpeg"),  # scan before the frame header
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x01", "jpeg"),  # SOF0 cut inside its size
        (b"\xff\xd8\x12\x34garbage", "jpeg"),  # not a JPEG signature, format says jpeg
        (b"garbage bytes", "png"),
    ],
)
def test_truncated_or_garbage_headers_are_a_clear_error(data, fmt):
    msg = compressed(data, fmt)
    with pytest.raises(ImageError, match=rf"corrupt {fmt} image"):
        decoded_size(msg)
    with pytest.raises(ImageError, match=rf"corrupt {fmt} image"):
        check_pixels(msg, 1 << 20)


@pytest.mark.parametrize(
    "data, fmt", [(b"GIF89a" + bytes(20), "gif"), (bytes(30), "16UC1; compressedDepth png")]
)
def test_unknown_formats_have_unknown_size(data, fmt):
    msg = compressed(data, fmt)
    assert decoded_size(msg) is None
    check_pixels(msg, 1)  # left to the conversion, which names the format
    with pytest.raises(ImageError, match="unsupported compressed format"):
        compressed_to_rgb(msg)
