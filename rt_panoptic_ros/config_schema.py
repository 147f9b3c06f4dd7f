"""Config fields that describe themselves, and the typed loader for trees of them.

A config section is a frozen dataclass whose fields are declared with :func:`setting`: the
default, one line saying what the field is, and its range. That is the only place they are
written: :func:`setting_problems` checks the ranges, :func:`settings` lists them for the node's
parameter descriptors (``ros/parameters.py``) and for ``docs/configuration.md``
(``python tools/config_docs.py``).

:func:`from_plain` builds such a tree from a plain dictionary (YAML, a checkpoint's embedded
config, ``key=value`` overrides applied by :func:`apply_overrides`); every config of the package
is read with it: the model's :class:`~rt_panoptic_ros.config.Config` and the training config.
An unknown key is refused with its close matches (``decoder.mask_tresh: unknown key; did you
mean decoder.mask_thresh?``), an ill-typed or out-of-range value with its field and what was
expected, all as one :class:`~rt_panoptic_ros.errors.ConfigError`.

Nothing here knows any particular config: :mod:`rt_panoptic_ros.config` holds the model's.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from rt_panoptic_ros.errors import ConfigError

T = TypeVar("T")

# ------------------------------------------------------------------------- described fields


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    step: float = 0,
    exclusive: bool = False,
    choices: tuple[Any, ...] = (),
) -> Any:
    """A config field with its description and range, written once.

    Args:
        default: the default value (immutable: numbers, strings, tuples).
        help: one line saying what the field is (docs, ``ros2 param describe``).
        low, high: the range of a number, or of every item of a tuple; ``None``: unbounded.
        step: the value is a multiple of ``step`` (0: any).
        exclusive: ``low`` and ``high`` themselves are outside the range.
        choices: the allowed values of a ``str`` field (a ``Literal`` field's come from its type).
    """
    meta = {"help": help, "low": low, "high": high, "step": step, "exclusive": exclusive, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SettingInfo:
    """What :func:`setting` says about one field, with its dotted key and type.

    Attributes:
        key: ``decoder.mask_thresh``, the field's path from the config's root.
        hint: its type annotation; default: its default value.
        help, low, high, step, exclusive: as given to :func:`setting`.
        choices: the allowed values (a ``Literal``'s, or given to :func:`setting`); ``()``: any.
    """

    key: str
    hint: Any
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    step: float = 0
    exclusive: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    def range_text(self) -> str:
        """The range in words: ``[0, 1]``, ``>= 1``, ``> 0``, ``0 or a multiple of 128``; or ``""``."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        lo, hi = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            text = f"({lo}, {hi})" if self.exclusive else f"[{lo}, {hi}]"
        elif self.low is not None:
            text = f"{'>' if self.exclusive else '>='} {lo}"
        elif self.high is not None:
            text = f"{'<' if self.exclusive else '<='} {hi}"
        else:
            text = ""
        if self.step and self.low == 0 and self.high is None:
            text = f"0 or a multiple of {_number(self.step)}"
        elif self.step:
            text = f"a multiple of {_number(self.step)}" + (f", {text}" if text else "")
        return text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside this field's range or choices (one line), or ``None``."""
        if self.choices:
            return (
                None
                if value in self.choices
                else f"{self.key}: {value!r}, expected one of {list(self.choices)}"
            )
        items = value if isinstance(value, tuple) else (value,)
        if all(self._fits(v) for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)):
            return None
        if isinstance(value, tuple):
            return f"{self.key}: {list(value)}, expected values {self.range_text()}"
        bounded = self.low is not None and self.high is not None and not self.step
        return f"{self.key}: {value}, expected {'a value in ' if bounded else ''}{self.range_text()}"

    def _fits(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.exclusive else v < self.low):
            return False
        if self.high is not None and (v >= self.high if self.exclusive else v > self.high):
            return False
        return not self.step or (v - (self.low or 0)) % self.step == 0


def settings(cls: type, prefix: str = "") -> list[SettingInfo]:
    """Every field of config dataclass ``cls``, nested ones flattened (``decoder.mask_thresh``).

    Example:
        >>> from rt_panoptic_ros.config import DecoderConfig
        >>> [s.key for s in settings(DecoderConfig, "decoder.")][:2]
        ['decoder.pre_nms_thresh', 'decoder.pre_nms_top_n']
    """
    return list(_settings(cls, prefix))


@functools.cache  # every Config built checks its fields: read each class's declarations once
def _settings(cls: type, prefix: str) -> tuple[SettingInfo, ...]:
    hints = typing.get_type_hints(cls)
    out: list[SettingInfo] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _settings(hint, f"{prefix}{f.name}.")
            continue
        meta = dict(f.metadata)
        if typing.get_origin(hint) is Literal:
            meta["choices"] = typing.get_args(hint)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        out.append(SettingInfo(f"{prefix}{f.name}", hint, default, **meta))
    return tuple(out)


def setting_problems(obj: Any, prefix: str = "") -> list[str]:
    """What in config dataclass ``obj`` (nested ones too) is outside its field's range or choices."""
    return [
        problem
        for info in settings(type(obj), prefix)
        if (problem := info.problem(_get(obj, info.key.removeprefix(prefix)))) is not None
    ]


def _get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _number(value: float | None) -> str:
    """``0.0`` -> ``0``, ``1e-4`` -> ``0.0001``: bounds as people write them."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(value)


# ------------------------------------------------------------------------ the typed loader


def from_plain(cls: type[T], data: Any, source: str) -> T:
    """Build config dataclass ``cls`` (nested ones too) from a plain dictionary, checked.

    Missing fields take their defaults; lists become tuples; ``cls``'s own checks
    (``__post_init__``) run last.

    Args:
        source: names the dictionary in errors (a file path, ``"config"``).

    Raises:
        ConfigError: ``source: decoder.mask_tresh: unknown key; did you mean decoder.mask_thresh?``,
            ``source: decoder.mask_thresh: expected a number, got 'high'``, or what ``cls``'s
            checks refuse.
    """
    return _build(cls, data, "", source)


def _build(cls: type[T], data: Any, prefix: str, source: str) -> T:
    if not isinstance(data, dict):
        where = f"{prefix.rstrip('.')}: " if prefix else ""
        raise ConfigError(f"{source}: {where}expected a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
            hint = (
                f"did you mean {' or '.join(prefix + n for n in close)}?"
                if close
                else f"expected one of {', '.join(prefix + n for n in names)}"
            )
            raise ConfigError(f"{source}: {prefix}{key}: unknown key; {hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}", source) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``hint``; lists become tuples, ints floats where asked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", source)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: {value!r}, expected one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{source}: {key}: expected {len(item_types)} values, got {len(value)}")
        return tuple(
            _coerce(t, v, f"{key}[{k}]", source)
            for k, (t, v) in enumerate(zip(item_types, value, strict=True))
        )
    expected = _EXPECTED.get(hint)
    if expected is None:
        raise TypeError(f"{key}: unsupported config type {hint!r}")  # a bug here, not user input
    words, accepts = expected
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, accepts):
        raise ConfigError(f"{source}: {key}: expected {words}, got {value!r}")
    return float(value) if hint is float else value


#: Plain types: how an error names them, and which YAML values they take.
_EXPECTED: dict[Any, tuple[str, tuple[type, ...]]] = {
    float: ("a number", (int, float)),
    int: ("an integer", (int,)),
    str: ("a string", (str,)),
    bool: ("true or false", (bool,)),
}


def to_plain(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a plain, YAML-safe dictionary (tuples become lists)."""
    return _lists(dataclasses.asdict(cfg))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path`` (``{}`` for an empty file).

    Raises:
        ConfigError: the file cannot be read, or is not YAML (first line of the parser's message).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return {} if data is None else data


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """``["solver.lr=0.01", ...]`` applied to a nested dict (values parsed as YAML), a copy.

    Overrides are applied before the dictionary is checked, so they are checked the same way.
    """
    if not overrides or not isinstance(data, dict):
        return data  # nothing to do, or not a mapping: from_plain says so
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value (e.g. solver.lr=0.01)")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[leaf] = _parse_value(text)
    return data


def _parse_value(text: str) -> Any:
    """A command-line value as YAML would read it, plus what YAML 1.1 leaves as strings
    (``1e-3``) as numbers; an empty value is the empty string."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def settings_table(infos: list[SettingInfo]) -> str:
    """A Markdown table of ``infos``: key, type, default, range, description (one row each)."""
    rows = ["| key | type | default | range | description |", "| --- | --- | --- | --- | --- |"]
    for info in infos:
        cells = (
            f"`{info.key}`",
            _type_name(info.hint),
            f"`{_shown(info.default)}`",
            info.range_text(),
            info.help,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _type_name(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "choices" if plural else "choice"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a, plural) for a in args)
    if origin is tuple:
        if args[-1] is Ellipsis:
            return f"list of {_type_name(args[0], plural=True)}"
        return f"{len(args)} {_type_name(args[0], plural=len(args) > 1)}"
    name = {float: "number", int: "integer", str: "string", bool: "boolean"}.get(hint, str(hint))
    return name + "s" if plural else name


def _shown(value: Any) -> str:
    """A default as YAML would write it, long lists cut short."""
    if isinstance(value, tuple) and len(value) > 6:
        return f"[{', '.join(map(str, value[:3]))}, ... ({len(value)} items)]"
    text = yaml.safe_dump(_lists(value), default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()
