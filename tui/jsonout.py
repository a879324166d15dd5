"""`--json`: one JSON object per line, for scripts."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys

from dattui.engine.events import Event


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _plain(v):
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def event_object(ev: Event) -> dict:
    d = {"event": _snake(type(ev).__name__)}
    for f in dataclasses.fields(ev):
        d[f.name] = _plain(getattr(ev, f.name))
    return d


def emit(obj: dict, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
    stream.flush()
