"""The package's exception types.

Every error a user can cause (a bad file, a bad config field, a bad input tensor) is raised
as a subclass of :class:`RTPanopticError` with a message that names the file or field and
what was expected, so that command-line tools can print it as one line and exit non-zero,
and the node can log it, count it and keep running.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none): for one-line
    logs and counters of errors that are not ours (a third-party library's, a decoder's)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RTPanopticError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RTPanopticError, ValueError):
    """A config file or dictionary has an unknown, missing or ill-typed field."""


class CheckpointError(RTPanopticError):
    """A model file is missing, unreadable, not a checkpoint, or does not fit the network."""


class InputError(RTPanopticError, ValueError):
    """An image or tensor handed to the network or predictor has the wrong type or shape."""


class ImageError(InputError):
    """An image message cannot be converted: unknown encoding, a size, ``step`` or data
    length that disagree with each other, an absurd size, or a compressed image that is
    corrupt or in a format other than JPEG and PNG."""


class DatasetError(RTPanopticError, ValueError):
    """A dataset or prediction file (image, panoptic PNG, JSON) is missing, unreadable or
    inconsistent with the others (an id a PNG holds but its JSON does not list, ...)."""


class ExportError(RTPanopticError):
    """An ONNX export failed its checks (checker, shape inference, an op TensorRT cannot parse),
    or an ONNX file is missing, unreadable or was not written by ``rt-panoptic-export``."""


class EngineError(RTPanopticError):
    """A backend cannot run: a TensorRT engine is missing, corrupt or built for another GPU,
    TensorRT version or input shape, or the library the backend needs is not installed."""


class ImageFileError(InputError):
    """An image or panoptic PNG file is missing, cannot be decoded or has the wrong layout."""
