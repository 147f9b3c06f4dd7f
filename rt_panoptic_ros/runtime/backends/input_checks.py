"""What every backend checks about the input it is handed, before running anything.

A static ONNX graph or a TensorRT engine runs one input shape only; the Predictor refuses a
mismatch when it is built (not at the first frame), and each backend again on every call, all
with the same message, which says how to get a graph of the wanted shape.
"""

from __future__ import annotations

from collections.abc import Sequence

from rt_panoptic_ros.errors import InputError


def check_input_shape(expected: Sequence[int], got: Sequence[int], where: str) -> None:
    """Raise :class:`InputError` unless an input of shape ``got`` fits a graph built for ``expected``.

    ``expected`` entries that are ``None`` (a dynamic dimension) match anything.
    """
    if len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got, strict=True)):
        return
    want = "x".join("?" if e is None else str(e) for e in expected)
    raise InputError(
        f"{where} takes input {want} (N x 3 x H x W), got {'x'.join(map(str, got))}: run it at the size "
        "and batch it was built for (input.height / input.width, Predictor(input_size=...)), or build "
        "one for this input (rt-panoptic-build-engine --height --width --batch, rt-panoptic-export --dynamic)"
    )
