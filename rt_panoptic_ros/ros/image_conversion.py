"""Camera messages to RGB arrays and result arrays to messages: the node's cv_bridge.

cv_bridge copies every frame and cannot be installed from PyPI; this module does the same
work with numpy and OpenCV, and copies only when the pixels must change:

- :func:`image_to_rgb`: ``sensor_msgs/Image`` -> ``uint8 [H, W, 3]`` RGB, for
  :data:`SUPPORTED_ENCODINGS`. ``rgb8`` and ``rgba8`` come back as zero-copy views of
  ``msg.data``; every other encoding is converted by one OpenCV call.
- :func:`compressed_to_rgb`: ``sensor_msgs/CompressedImage`` (JPEG, PNG) -> the same.
- :func:`decoded_size`, :func:`check_pixels`: an image's size from its fields or its JPEG/PNG
  header, and a pixel limit enforced before anything is decoded.
- :func:`semantic_to_msg`, :func:`instance_to_msg`, :func:`rgb_to_msg`: result arrays ->
  ``mono8``/``mono16``/``rgb8`` images that keep the input's header and size.

Like cv_bridge, the input side honours ``step`` (row padding) and, for 16-bit data,
``is_bigendian``. Anything that cannot be converted raises :class:`ImageError` with a
message that names the problem, so the node can log it, count it and keep serving.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from rt_panoptic_ros.errors import ImageError

#: Larger sides are refused: no camera makes them, and a corrupt header can claim anything.
MAX_SIDE = 16384
#: Larger images (raw ``step x height`` or decoded ``H x W x 3``) are refused: 256 MiB.
MAX_BYTES = 256 * 1024 * 1024

#: Bytes per pixel of each supported ``sensor_msgs/Image`` encoding (REP 118 names).
BYTES_PER_PIXEL = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "yuv422": 2,  # = uyvy (the old name of the same layout)
    "uyvy": 2,
    "yuv422_yuy2": 2,  # = yuyv
    "yuyv": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
}
SUPPORTED_ENCODINGS = tuple(BYTES_PER_PIXEL)
#: What :func:`compressed_to_rgb` decodes.
SUPPORTED_COMPRESSED = ("jpeg", "png")

# OpenCV's historical Bayer names describe the pattern from the second row and column, so
# ROS's bayer_rggb8 is OpenCV's "BG" (cv_bridge maps it so). The four-letter aliases name the
# pattern from the top-left pixel, as ROS does: COLOR_BayerRGGB2RGB == COLOR_BayerBG2RGB.
# test_image_conversion.py checks each against a mosaic of a known image.
_CV_CODES = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,  # after taking the high byte
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # bytes U Y0 V Y1
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,  # bytes Y0 U Y1 V
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
    "bayer_rggb8": cv2.COLOR_BayerRGGB2RGB,
    "bayer_bggr8": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGBRG2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGRBG2RGB,
}
_PACKED_PAIRS = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")  # two pixels share 4 bytes


# --- input: sensor_msgs/Image -> RGB -------------------------------------------------------


def image_to_rgb(msg: Image) -> np.ndarray:
    """The image of ``msg`` as ``uint8 [H, W, 3]`` RGB.

    ``rgb8`` and ``rgba8`` are returned as views of ``msg.data`` (no copy; with row padding
    or alpha the view is strided, not C-contiguous); they share memory with the message, so
    copy before writing into them. Every other encoding is converted into a new array:

    - ``bgr8``, ``bgra8``: channels reordered (alpha dropped).
    - ``mono8``: grey replicated into R, G and B.
    - ``mono16``: scaled to 8 bits by keeping the high byte (``value >> 8``, the full 16-bit
      range onto 0..255, the same for every frame), then replicated. Byte order is
      ``is_bigendian``'s. Sensors that fill only the low 10-12 bits therefore look dark; a
      fixed scale keeps frames comparable, where per-frame normalisation would not.
    - ``yuv422``/``uyvy`` (bytes U Y0 V Y1) and ``yuv422_yuy2``/``yuyv`` (Y0 U Y1 V):
      OpenCV's BT.601 limited-range conversion; the width must be even.
    - ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` (the pattern's
      top-left 2x2 cell, row by row): OpenCV's bilinear demosaicing.

    Raises:
        ImageError: an unknown encoding (the message lists :data:`SUPPORTED_ENCODINGS`), a
            zero or absurd size (a side over :data:`MAX_SIDE`, data over :data:`MAX_BYTES`),
            a ``step`` shorter than a row, a data length other than ``step * height``, or an
            odd width for a YUV 4:2:2 encoding.
    """
    rows = _rows(msg)  # [H, W * bytes per pixel] uint8 view of msg.data
    height, width = rows.shape[0], int(msg.width)
    encoding = msg.encoding
    if encoding == "rgb8":
        return rows.reshape(height, width, 3)  # splits the contiguous row axis: a view
    if encoding == "rgba8":
        return rows.reshape(height, width, 4)[..., :3]
    if encoding == "mono16":
        # Keep the most significant byte of each pixel, wherever the byte order puts it.
        rows = rows[:, 0 if msg.is_bigendian else 1 :: 2]
    elif encoding in ("bgr8", "bgra8") or encoding in _PACKED_PAIRS:
        rows = rows.reshape(height, width, -1)  # [H, W, bytes per pixel], still a view
    return cv2.cvtColor(rows, _CV_CODES[encoding])


def _rows(msg: Image) -> np.ndarray:
    """``msg.data`` as a ``uint8 [height, width * bytes_per_pixel]`` view, after every check."""
    encoding = msg.encoding
    bpp = BYTES_PER_PIXEL.get(encoding)
    if bpp is None:
        raise ImageError(f"unknown image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, encoding)
    if step < width * bpp:
        raise ImageError(
            f"step {step} is shorter than a row of {width} {encoding} pixels ({width * bpp} bytes)"
        )
    if step * height > MAX_BYTES:
        raise ImageError(
            f"image of {step} x {height} = {step * height} bytes exceeds the limit of {MAX_BYTES} bytes"
        )
    if encoding in _PACKED_PAIRS and width % 2:
        raise ImageError(f"width {width} is odd: {encoding} packs two pixels into 4 bytes")
    try:
        data = np.frombuffer(msg.data, dtype=np.uint8)  # no copy: msg.data is array('B')
    except (TypeError, ValueError) as error:
        raise ImageError(f"image data is not a byte buffer ({type(msg.data).__name__})") from error
    if data.size != step * height:
        raise ImageError(
            f"image data holds {data.size} bytes, but step x height = {step} x {height} = "
            f"{step * height} for a {width}x{height} {encoding} image"
        )
    return data.reshape(height, step)[:, : width * bpp]


def _check_size(height: int, width: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"empty {what} image: {width}x{height} (width x height)")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageError(
            f"absurd {what} image size {width}x{height} (width x height): at most {MAX_SIDE} per side"
        )


# --- input: sensor_msgs/CompressedImage -> RGB --------------------------------------------

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """The JPEG or PNG image in ``msg`` as a new ``uint8 [H, W, 3]`` RGB array.

    The format is read from the data's signature, not from ``msg.format`` (drivers write
    "jpeg", "rgb8; jpeg compressed bgr8", ...), so a mislabelled image still decodes.
    Grey images come back replicated into R, G and B, alpha is dropped, and 16-bit PNGs are
    scaled to 8 bits by their high byte (as ``mono16`` is in :func:`image_to_rgb`).

    Raises:
        ImageError: empty data, a format other than JPEG and PNG (including depth images in
            ``compressedDepth`` format), a header that gives no size or an absurd one, or
            data that OpenCV cannot decode (corrupt or truncated).
    """
    fmt = msg.format
    try:
        data = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise ImageError(f"compressed data is not a byte buffer ({type(msg.data).__name__})") from error
    if data.size == 0:
        raise ImageError(f"empty compressed image (format {fmt!r})")
    if data.size > MAX_BYTES:
        raise ImageError(f"compressed image of {data.size} bytes exceeds the limit of {MAX_BYTES} bytes")
    if "compresseddepth" in fmt.lower():
        raise ImageError(
            f"unsupported compressed format {fmt!r}: a depth image "
            f"(supported: {', '.join(SUPPORTED_COMPRESSED)})"
        )
    kind, size = _compressed_size(data, fmt)
    height, width = size
    # Checked before decoding, so that a small file cannot make OpenCV allocate gigabytes.
    _check_size(height, width, kind)
    if height * width * 3 > MAX_BYTES:
        raise ImageError(f"{kind} image of {width}x{height} exceeds the limit of {MAX_BYTES} decoded bytes")
    rgb = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        raise ImageError(f"corrupt {kind} image: OpenCV cannot decode its {data.size} bytes")
    return rgb


def _compressed_size(data: np.ndarray, fmt: str) -> tuple[str, tuple[int, int]]:
    """``(kind, (height, width))`` of JPEG or PNG bytes, from their header alone."""
    head = data[:8].tobytes()
    if head.startswith(_JPEG_MAGIC):
        kind, size = "jpeg", _jpeg_size(data)
    elif head.startswith(_PNG_MAGIC):
        kind, size = "png", _png_size(data)
    else:
        named = _named_format(fmt)
        if named:
            raise ImageError(f"corrupt {named} image: its data does not start with a {named} signature")
        raise ImageError(
            f"unsupported compressed format {fmt!r} (supported: {', '.join(SUPPORTED_COMPRESSED)})"
        )
    if size is None:
        raise ImageError(f"corrupt {kind} image: no readable header giving its size ({data.size} bytes)")
    return kind, size


def _named_format(fmt: str) -> str | None:
    """The supported format that ``msg.format`` names, if any ("rgb8; jpeg compressed bgr8")."""
    fmt = fmt.lower()
    if "jpeg" in fmt or "jpg" in fmt:
        return "jpeg"
    return "png" if "png" in fmt else None


def _png_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, which must come first."""
    if data.size < 24 or data[12:16].tobytes() != b"IHDR":
        return None
    width = int.from_bytes(data[16:20].tobytes(), "big")
    height = int.from_bytes(data[20:24].tobytes(), "big")
    return height, width


# Start-of-frame markers carry the size: C0-CF except C4 (DHT), C8 (JPG) and CC (DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame segment, walking the marker segments."""
    head = data[: 1 << 20].tobytes()  # the frame header comes early (after EXIF, tables)
    i = 2  # past SOI
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            if i + 9 > len(head):
                return None
            return int.from_bytes(head[i + 5 : i + 7], "big"), int.from_bytes(head[i + 7 : i + 9], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


# --- sizes, before any decoding ------------------------------------------------------------


def decoded_size(msg: Image | CompressedImage) -> tuple[int, int] | None:
    """``(height, width)`` the image of ``msg`` has once decoded, without decoding it.

    ``sensor_msgs/Image``: its fields. ``CompressedImage``: the PNG ``IHDR`` chunk or the JPEG
    start-of-frame segment (SOF0-SOF15 but DHT, JPG and DAC, any marker segments and fill
    bytes before it), found by the data's signature as :func:`compressed_to_rgb` does; reading
    a header costs microseconds whatever the image's size.

    Returns:
        The size, or ``None`` for a compressed format that is neither JPEG nor PNG (its size
        is unknown: :func:`compressed_to_rgb` refuses it anyway).

    Raises:
        ImageError: a compressed image with a JPEG or PNG signature (or format naming one)
            whose header is truncated or corrupt, or data that is not a byte buffer.
    """
    if isinstance(msg, Image):
        return int(msg.height), int(msg.width)
    try:
        data = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise ImageError(f"compressed data is not a byte buffer ({type(msg.data).__name__})") from error
    head = data[:8].tobytes()
    if "compresseddepth" in msg.format.lower():  # refused by compressed_to_rgb with its reason
        return None
    if not (head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC) or _named_format(msg.format)):
        return None
    return _compressed_size(data, msg.format)[1]


def check_pixels(msg: Image | CompressedImage, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` pixels before anything decodes it.

    A 273 KB PNG can declare 16384x5400 pixels; decoded and segmented it took gigabytes. The
    node calls this first, so that such a frame costs a header read and one log line.

    Args:
        max_pixels: the limit (height x width); 0 = no limit.

    Raises:
        ImageError: ``image 16384x5400 (88.5 MP) exceeds max_input_pixels 33.6 MP``
            (width x height), or what :func:`decoded_size` raises.
    """
    if max_pixels <= 0:
        return
    size = decoded_size(msg)
    if size is None:
        return
    height, width = size
    if height * width > max_pixels:
        raise ImageError(
            f"image {width}x{height} ({height * width / 1e6:.1f} MP) exceeds max_input_pixels "
            f"{max_pixels / 1e6:.1f} MP"
        )


# --- output: result arrays -> sensor_msgs/Image ---------------------------------------------


def semantic_to_msg(semantic: np.ndarray, header: Header) -> Image:
    """The semantic map ``[H, W]`` (class ids) as an image with ``header``.

    ``mono8`` when ``semantic`` is uint8 (models with at most 255 classes; 255 = void), and
    ``mono16`` for any other integer dtype (the decoder's int32 for larger models; 65535 =
    void). The encoding follows the dtype, not the values, so it never changes between
    frames of one model.

    Raises:
        ImageError: not a 2-D integer array, or (mono16) a value outside 0..65535.
    """
    semantic = _map_2d(semantic, "semantic")
    if semantic.dtype == np.uint8:
        return _image_msg(semantic, header, "mono8")
    return _image_msg(_as_uint16(semantic, "semantic"), header, "mono16")


def instance_to_msg(instance: np.ndarray, header: Header) -> Image:
    """The instance map ``[H, W]`` (0 = no instance, k = segment k) as ``mono16`` with ``header``.

    Raises:
        ImageError: not a 2-D integer array, or a value outside 0..65535.
    """
    return _image_msg(_as_uint16(_map_2d(instance, "instance"), "instance"), header, "mono16")


def rgb_to_msg(rgb: np.ndarray, header: Header) -> Image:
    """A ``uint8 [H, W, 3]`` RGB array (any strides) as an ``rgb8`` image with ``header``.

    Raises:
        ImageError: another shape or dtype.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"rgb image must be a uint8 [H, W, 3] array, got {_describe(rgb)}")
    return _image_msg(rgb, header, "rgb8")


def _image_msg(pixels: np.ndarray, header: Header, encoding: str) -> Image:
    """An Image of ``pixels`` (``[H, W]`` or ``[H, W, C]``, little-endian), rows unpadded."""
    if not isinstance(header, Header):
        raise TypeError(f"header must be a std_msgs/Header, got {type(header).__name__}")
    height, width = pixels.shape[:2]
    _check_size(height, width, encoding)
    pixels = np.ascontiguousarray(pixels)  # a no-op for the decoder's and renderer's arrays
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(height), int(width)  # Python ints: the C serialiser wants them
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    # Appending to the message's own array('B') copies the pixels once, in C: 0.16 ms for
    # 1024x2048 rgb8 here. `msg.data = pixels.tobytes()` copies twice (0.35 ms) and, with
    # ROS_PYTHON_CHECK_FIELDS=1, checks every byte in Python (110 ms at 512x1024); a numpy
    # array or memoryview goes through Python byte by byte (206 ms). Figures and the command:
    # benchmarks/image_conversion.json.
    msg.data.frombytes(pixels.view(np.uint8))  # as bytes: array.frombytes refuses uint16
    return msg


def _map_2d(values: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray) or values.ndim != 2:
        raise ImageError(f"{name} map must be an [H, W] array, got {_describe(values)}")
    if values.dtype == np.bool_:
        return values.view(np.uint8)
    if not np.issubdtype(values.dtype, np.integer):
        raise ImageError(f"{name} map must hold integers, got {values.dtype}")
    return values


def _as_uint16(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as little-endian uint16, refusing values that do not fit."""
    fits = values.dtype.kind == "u" and values.dtype.itemsize <= 2
    if not fits and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 0xFFFF:
            raise ImageError(f"{name} map holds values in {low}..{high}; mono16 holds 0..65535")
    return values.astype("<u2", copy=False)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__
