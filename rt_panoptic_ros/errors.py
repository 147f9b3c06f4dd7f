"""The package's exception types.

Every error a user can cause (a bad file, a bad config field, a bad input tensor) is raised
as a subclass of :class:`RTPanopticError` with a message that names the file or field and
what was expected, so that command-line tools can print it as one line and exit non-zero,
and the node can log it, count it and keep running.
"""

from __future__ import annotations


class RTPanopticError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RTPanopticError, ValueError):
    """A config file or dictionary has an unknown, missing or ill-typed field."""


class CheckpointError(RTPanopticError):
    """A model file is missing, unreadable, not a checkpoint, or does not fit the network."""


class InputError(RTPanopticError, ValueError):
    """An image or tensor handed to the network or predictor has the wrong type or shape."""


class DatasetError(RTPanopticError, ValueError):
    """A dataset or prediction file (image, panoptic PNG, JSON) is missing, unreadable or
    inconsistent with the others (an id a PNG holds but its JSON does not list, ...)."""
