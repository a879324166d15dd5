"""Events and snapshots to JSON-ready dicts and back, for the daemon's control
socket. Only the classes registered here can be decoded: input is untrusted."""

from __future__ import annotations

import dataclasses
import enum
import typing

from . import events as ev
from .daemon.interface import CheckResult, FilePage

_CLASSES: dict[str, type] = {}


def _register(*classes: type) -> None:
    for c in classes:
        _CLASSES[c.__name__] = c


_register(*(c for c in vars(ev).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c)),
          FilePage, CheckResult)


def encode(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            d[f.name] = encode(getattr(obj, f.name))
        return d
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [encode(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls, vars(ev) | {"FileProgress": ev.FileProgress})


def decode(data):
    """Rebuild registered dataclasses (recursively); plain values pass through."""
    if isinstance(data, list):
        return [decode(x) for x in data]
    if not isinstance(data, dict):
        return data
    name = data.get("type")
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        return {k: decode(v) for k, v in data.items()}
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = decode(data[f.name])
        hint = hints.get(f.name)
        origin = typing.get_origin(hint)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            value = hint(value)
        elif origin is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
