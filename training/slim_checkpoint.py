"""Slim a training checkpoint into a model file to ship: weights and config only, fp16 if asked.

::

    rt-panoptic-slim-checkpoint runs/synthetic/last.pt models/small_synthetic.pt --half \
        decoder.mask_thresh=0.1

(Not to be confused with ``rt-panoptic-export``, which writes an ONNX graph of a model file.)

The training state (optimizer momenta, RNG states, ...) is dropped. ``key=value`` arguments
change the embedded config's ``decoder`` or ``input`` fields (thresholds tuned on a validation
split after training; the weights are untouched).

With ``--half`` the
floating-point weights are stored as float16, which halves the file; :func:`rt_panoptic_ros.load_model`
copies them into the float32 network its config builds, so the model still runs in fp32
(the rounding moves a weight by at most 2^-11 of itself).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rt_panoptic_ros.cli_support import make_parser, run_cli
from rt_panoptic_ros.config import Config, apply_overrides
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.model import RTPanoNet
from rt_panoptic_ros.model.checkpoint import atomic_torch_save, load_checkpoint, load_weights

PROG = "rt-panoptic-slim-checkpoint"


def slim_checkpoint(
    source: str | Path, target: str | Path, half: bool = False, overrides: Sequence[str] = ()
) -> Path:
    """Write ``target`` with the format, config, weights and meta of checkpoint ``source``.

    Args:
        overrides: ``"decoder.<field>=<value>"``, ``"input.<field>=<value>"`` or
            ``"dataset.name=<name>"`` changes to the config.

    Raises:
        CheckpointError: ``source`` is not a checkpoint of this package, or its weights do not
            fit its config.
        ConfigError: an override names an unknown field or has a bad value.
    """
    data = load_checkpoint(source)
    config = apply_overrides(data["config"], list(overrides))
    for item in overrides:
        if item.split(".", 1)[0] not in ("decoder", "input") and not item.startswith("dataset.name="):
            raise ConfigError(f"{item!r}: only decoder.*, input.* and dataset.name can change after training")
    cfg = Config.from_dict(config, source="override")
    # Prove the weights fit the config before anything is written.
    load_weights(RTPanoNet(cfg), data["model"], source=str(source))
    weights = {
        name: value.half() if half and value.is_floating_point() else value
        for name, value in data["model"].items()
    }
    meta = dict(data.get("meta", {}))
    meta["stored_as"] = "float16" if half else "float32"
    payload = {
        "format": data["format"],
        "format_version": data["format_version"],
        "config": cfg.to_dict(),
        "model": weights,
        "meta": meta,
    }
    target = Path(target)
    atomic_torch_save(payload, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(PROG, "Strip a training checkpoint down to a model file.")
    parser.add_argument("source", help="a checkpoint written by rt-panoptic-train")
    parser.add_argument("target", help="the model file to write")
    parser.add_argument("--half", action="store_true", help="store the weights as float16")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="decoder.*, input.*, dataset.name changes"
    )
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        path = slim_checkpoint(args.source, args.target, args.half, args.overrides)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
