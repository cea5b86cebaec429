"""Typed-config machinery: dataclasses checked on construction, YAML in, `key=value` overrides.

Every stage config in `ray_cotd.config` is a dataclass built from these pieces. A field carries a
one-line doc (`doc(...)`), its annotation is enforced when the config is built, unknown keys are
rejected with the valid ones listed, and `save_resolved` writes what actually ran beside outputs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config that cannot run. The message names the source file (when any) and the key."""


def doc(default: Any = dataclasses.MISSING, text: str = "", *, factory: Any = None, ge: float | None = None,
        gt: float | None = None, le: float | None = None, lt: float | None = None, output_dir: bool = False) -> Any:
    """A dataclass field with a one-line doc; `factory` for mutable defaults.

    ge / gt / le / lt: the valid range of a numeric field (>=, >, <=, <), checked when the config is
    built (a None value of an Optional field is not checked). Every int and float field declares one.
    output_dir: the field names a directory the stage writes; a file in its place (or in place of a
    parent) fails when the config is built, not at the stage's first write.
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata: dict[str, Any] = {"doc": text}
    if bounds:
        metadata["range"] = bounds
    if output_dir:
        metadata["output_dir"] = True
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_RANGE_TESTS = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


def describe_range(bounds: dict[str, float]) -> str:
    """">= 1", "> 0", "[0, 1]", "(0, 1]": how a field's declared range reads in messages."""
    low = next(((k, bounds[k]) for k in ("ge", "gt") if k in bounds), None)
    high = next(((k, bounds[k]) for k in ("le", "lt") if k in bounds), None)
    if low and high:
        return f"{'[' if low[0] == 'ge' else '('}{low[1]:g}, {high[1]:g}{']' if high[0] == 'le' else ')'}"
    op = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    kind, bound = low or high  # type: ignore[misc]
    return f"{op[kind]} {bound:g}"


def check_output_dir(name: str, value: str | None) -> None:
    """ConfigError naming `name` when the directory `value` cannot be created because a file is in
    the way (the path itself or one of its parents). URIs (s3://...) are not checked."""
    if not value or "://" in value:
        return
    path = Path(value)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"cannot be created: {candidate} is a file"
                raise ConfigError(f"{name}: {value} {what}, not a directory; choose another {name}")
            return


def check_range(name: str, value: Any, bounds: dict[str, float]) -> None:
    """ConfigError naming `name` when `value` is outside `bounds` (NaN is outside every range)."""
    if value is None or not bounds:
        return
    rule = describe_range(bounds)
    if not all(_RANGE_TESTS[kind](value, bound) for kind, bound in bounds.items()):
        raise ConfigError(f"{name}: {value!r} is outside {rule}" if len(bounds) > 1 else f"{name}: {value!r} must be {rule}")
    if isinstance(value, float) and math.isinf(value):  # YAML's .inf: no setting of ours means anything with it
        raise ConfigError(f"{name}: {value!r} must be a finite number {rule}")


def field_docs(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; return it (converted where lossless: int -> float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where=where)
    if tp is float:
        # PyYAML reads "1e-3" (no dot) as a string; a number written that way is still a number.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


class StageConfig:
    """Base for stage configs: type-checks every field after construction, then runs `validate`."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name))
            check_range(f.name, getattr(self, f.name), f.metadata.get("range", {}))
            if f.metadata.get("output_dir"):
                check_output_dir(f.name, getattr(self, f.name))
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError naming the key."""


def from_dict(cls: type, data: dict, *, where: str = "") -> Any:
    """Build `cls` from a plain mapping, rejecting unknown keys with the valid ones listed."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(names)}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"missing required key{'s' if len(missing) > 1 else ''}: {', '.join(prefix + k for k in missing)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[key] = from_dict(tp, value, where=path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if where and not str(err).startswith(where):
            raise ConfigError(f"{where}.{err}") from None
        raise


def parse_overrides(overrides: list[str]) -> dict:
    """`["a=1", "lora.r=8", "levels=[1,2]"]` -> nested dict; values parsed as YAML scalars/lists."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load a stage config from YAML (optional) plus `key=value` overrides.

    Errors name the YAML file, so a job's log says which file and key were wrong.
    """
    data: dict = {}
    source = ""
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"{p}: not a YAML text file (byte {err.start} is not UTF-8)") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        if source:
            raise ConfigError(f"{source}: {err}") from None
        raise


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_resolved(cfg: Any, directory: str | Path, name: str = "resolved_config.yaml") -> Path:
    """Write the config that actually ran beside the outputs it made."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    target.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return target


def describe(cls: type) -> str:
    """One line per key: name, type, default and doc (for `ray-cotd <stage> --help-config`)."""
    hints = get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        bounds = f.metadata.get("range")
        valid = f" (valid: {describe_range(bounds)})" if bounds else ""
        lines.append(f"  {f.name}: {_type_name(hints[f.name])} = {default}  # {f.metadata.get('doc', '')}{valid}")
    return "\n".join(lines)


__all__ = [
    "ConfigError",
    "StageConfig",
    "check_output_dir",
    "check_range",
    "describe",
    "describe_range",
    "doc",
    "field_docs",
    "from_dict",
    "load",
    "parse_overrides",
    "save_resolved",
    "to_dict",
]
