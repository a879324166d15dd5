"""dattui configuration: built-in defaults (``default.toml``, shipped with the
package) deep-merged with the user's ``<state dir>/config.toml``.

The defaults file is the single source of values; the dataclasses below are the
single source of keys and types. Every problem in a user file is a
``UsageError`` with one line naming the file, the key and what was expected.

Nothing happens at import: no file is read and nothing is cached.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import tomli_w

from dattui.engine import bandwidth as _bw
from dattui.engine import statedir
from dattui.engine.errors import UsageError

__all__ = [
    "Config",
    "NodeConfig",
    "DiscoveryConfig",
    "TransferConfig",
    "CloneConfig",
    "ShareConfig",
    "TuiConfig",
    "RendezvousConfig",
    "CONFIG_FILE_NAME",
    "load",
    "defaults",
    "save",
    "default_text",
    "default_path",
]

CONFIG_FILE_NAME = "config.toml"
_DEFAULTS_NAME = "default.toml"
_MISSING: Any = object()


# ---- the schema ---------------------------------------------------------------

@dataclass(frozen=True)
class NodeConfig:
    port: int
    bind: str
    path_mtu_discovery: bool
    udp_offload: bool


@dataclass(frozen=True)
class DiscoveryConfig:
    lan: bool
    rendezvous: tuple[str, ...]
    dht: bool
    dht_bootstrap: tuple[str, ...]


@dataclass(frozen=True)
class TransferConfig:
    block_size: int
    max_inflight_bytes: int
    max_inflight_requests: int
    upload: bool
    lanes: int


@dataclass(frozen=True)
class CloneConfig:
    find_timeout: float
    stall_timeout: float
    peer_idle_timeout: float


@dataclass(frozen=True)
class ShareConfig:
    include_hidden: bool


@dataclass(frozen=True)
class BandwidthConfig:
    limit_up: str
    limit_down: str
    schedule: tuple[str, ...]


@dataclass(frozen=True)
class TuiConfig:
    refresh_hz: float


@dataclass(frozen=True)
class RendezvousConfig:
    """What `dattui rendezvous` serves with (its flags override these)."""

    relay_rate: int
    relay_rate_per_allocation: int
    relay_max_duration: float
    relay_idle: float


# Table name -> section class, in file order. `keys` is handled apart: it is a
# table of binding id -> key name whose ids are those of the defaults file.
_SECTIONS: dict[str, type] = {
    "node": NodeConfig,
    "discovery": DiscoveryConfig,
    "transfer": TransferConfig,
    "clone": CloneConfig,
    "share": ShareConfig,
    "bandwidth": BandwidthConfig,
    "tui": TuiConfig,
    "rendezvous": RendezvousConfig,
}
_KEYS = "keys"


@dataclass(frozen=True)
class Config:
    """The whole configuration; read-only. ``keys`` maps binding ids to keys."""

    node: NodeConfig
    discovery: DiscoveryConfig
    transfer: TransferConfig
    clone: CloneConfig
    share: ShareConfig
    bandwidth: BandwidthConfig
    tui: TuiConfig
    rendezvous: RendezvousConfig
    keys: Mapping[str, str]
    # The user file that was merged over the defaults, if any.
    source: Path | None = dataclasses.field(default=None, compare=False)

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        """``get("transfer.block_size")``, ``get("keys.quit")``, ``get("node")``.

        Raises KeyError for an unknown name unless `default` is given.
        """
        section, _, key = dotted.partition(".")
        if section in _SECTIONS or section == _KEYS:
            value = getattr(self, section)
            if not key:
                return value
            if section == _KEYS:
                if key in value:
                    return value[key]
            elif key in _field_types(_SECTIONS[section]):
                return getattr(value, key)
        if default is not _MISSING:
            return default
        raise KeyError(dotted)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain TOML-ready dict (lists, not tuples) of every value."""
        out: dict[str, dict[str, Any]] = {}
        for name in _SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
                for f in dataclasses.fields(section)
            }
        out[_KEYS] = dict(self.keys)
        return out


# ---- checks -------------------------------------------------------------------

_HOSTPORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$")


def _is_hostport(v: str) -> bool:
    m = _HOSTPORT.match(v)
    return m is not None and 1 <= int(m.group(1)) <= 65535


# (section, key) -> (predicate on an already type-checked value, what is expected)
_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("node", "port"): (lambda v: 1 <= v <= 65535, "an integer from 1 to 65535"),
    ("node", "bind"): (lambda v: v.strip() != "", 'an IP address such as "0.0.0.0"'),
    ("discovery", "rendezvous"): (
        lambda v: all(_is_hostport(x) for x in v),
        'a list of "host:port" strings',
    ),
    ("discovery", "dht_bootstrap"): (
        lambda v: all(_is_hostport(x) for x in v),
        'a list of "host:port" strings',
    ),
    ("transfer", "block_size"): (lambda v: v > 0, "a positive integer (bytes)"),
    ("transfer", "max_inflight_bytes"): (lambda v: v > 0, "a positive integer (bytes)"),
    ("transfer", "max_inflight_requests"): (lambda v: v > 0, "a positive integer"),
    ("transfer", "lanes"): (lambda v: -1 <= v <= 8, "-1 (as many as the cores allow), 0 (none) or 1-8"),
    ("clone", "find_timeout"): (lambda v: v > 0, "a positive number of seconds"),
    ("clone", "stall_timeout"): (lambda v: v > 0, "a positive number of seconds"),
    ("clone", "peer_idle_timeout"): (lambda v: v > 0, "a positive number of seconds"),
    ("tui", "refresh_hz"): (lambda v: 0 < v <= 1000, "a number above 0 (redraws per second)"),
    ("bandwidth", "limit_up"): (lambda v: _parses(_bw.parse_rate, v),
                                'a rate such as "20MB" (per second), "2MiB", "100mbit", or "" for none'),
    ("bandwidth", "limit_down"): (lambda v: _parses(_bw.parse_rate, v),
                                  'a rate such as "20MB" (per second), "2MiB", "100mbit", or "" for none'),
    ("bandwidth", "schedule"): (lambda v: all(_parses(_bw.parse_rule, r) for r in v),
                                'a list of rules such as "mon-fri 08:00-18:00 up=20MB down=50MB"'),
    ("rendezvous", "relay_rate"): (lambda v: 0 <= v <= 0xFFFFFFFF,
                                   "0 (no limit) or bytes per second, at most 4294967295"),
    ("rendezvous", "relay_rate_per_allocation"): (lambda v: 0 <= v <= 0xFFFFFFFF,
                                                  "0 (no limit) or bytes per second, at most 4294967295"),
    ("rendezvous", "relay_max_duration"): (lambda v: v >= 0, "0 (no limit) or a positive number of seconds"),
    ("rendezvous", "relay_idle"): (lambda v: v > 0, "a positive number of seconds"),
}

def _parses(parse: Callable[[str], Any], value: str) -> bool:
    try:
        parse(value)
    except UsageError:
        return False
    return True


_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _describe(value: Any) -> str:
    kind = {
        bool: "a boolean", int: "an integer", float: "a float", str: "a string",
        list: "a list", tuple: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{shown} ({kind})"


def _type_ok(tp: Any, value: Any) -> tuple[bool, str]:
    """Whether `value` has type `tp`; and the words for what is expected."""
    if tp is bool:
        return isinstance(value, bool), _TYPE_WORDS[bool]
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), _TYPE_WORDS[int]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, _TYPE_WORDS[float]
    if tp is str:
        return isinstance(value, str), _TYPE_WORDS[str]
    if typing.get_origin(tp) is tuple:  # tuple[str, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value)
        return ok, "a list of strings"
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in the schema


def _validate(data: Any, source: str) -> None:
    """Raise UsageError naming `source` unless `data` is a valid (possibly
    partial) configuration: known sections and keys, right types, sane values."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: expected a TOML document of tables, got {_describe(data)}")
    known_sections = [*_SECTIONS, _KEYS]
    for name, table in data.items():
        if name not in known_sections:
            raise UsageError(
                f"{source}: unknown section [{name}]; "
                f"known sections are {', '.join(known_sections)}"
            )
        if not isinstance(table, Mapping):
            raise UsageError(
                f"{source}: {name} must be a table ([{name}] with key = value lines), "
                f"got {_describe(table)}"
            )
        if name == _KEYS:
            _validate_keys(table, source)
            continue
        types = _field_types(_SECTIONS[name])
        for key, value in table.items():
            if key not in types:
                raise UsageError(
                    f"{source}: unknown key {name}.{key}; "
                    f"known keys in [{name}] are {', '.join(types)}"
                )
            ok, expected = _type_ok(types[key], value)
            if ok and (name, key) in _CHECKS:
                predicate, expected = _CHECKS[(name, key)]
                ok = predicate(value)
            if not ok:
                raise UsageError(
                    f"{source}: {name}.{key} must be {expected}, got {_describe(value)}"
                )


def _validate_keys(table: Mapping[str, Any], source: str) -> None:
    known = list(_parse_defaults()[_KEYS])
    for key, value in table.items():
        if key not in known:
            raise UsageError(
                f"{source}: unknown key binding keys.{key}; "
                f"known bindings are {', '.join(known)}"
            )
        if not isinstance(value, str) or not value.strip():
            raise UsageError(
                f'{source}: keys.{key} must be a key name such as "q" or "ctrl+c", '
                f"got {_describe(value)}"
            )


# ---- building -----------------------------------------------------------------

def default_text() -> str:
    """The commented default configuration file, as shipped."""
    return (
        importlib.resources.files(__name__)
        .joinpath(_DEFAULTS_NAME)
        .read_text(encoding="utf-8")
    )


def _parse_defaults() -> dict[str, Any]:
    return tomllib.loads(default_text())


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _build(data: Mapping[str, Any], source: Path | None) -> Config:
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        types = _field_types(cls)
        table = data[name]
        values = {}
        for key, tp in types.items():
            v = table[key]
            if typing.get_origin(tp) is tuple:
                v = tuple(v)
            elif tp is float:
                v = float(v)
            values[key] = v
        sections[name] = cls(**values)
    keys = MappingProxyType(dict(data[_KEYS]))
    return Config(**sections, keys=keys, source=source)


def defaults() -> Config:
    """The built-in configuration, no user file."""
    data = _parse_defaults()
    _validate(data, f"built-in {_DEFAULTS_NAME}")
    return _build(data, None)


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the user's configuration file lives (it may not exist)."""
    return statedir.state_dir(dict(environ) if environ is not None else None) / CONFIG_FILE_NAME


def _read_user_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: configuration file not found") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read configuration file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: configuration file is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = " ".join(str(e).split())
        raise UsageError(f"{path}: not valid TOML: {msg}") from None


def load(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, overridden key by key by the user's file.

    `path` None means ``state_dir(environ) / "config.toml"`` if that exists,
    else the defaults alone. An explicit `path` must exist.
    """
    if path is None:
        candidate = default_path(environ)
        if not candidate.is_file():
            return defaults()
        path = candidate
    path = Path(path)
    user = _read_user_file(path)
    _validate(user, str(path))
    merged = _merge(_parse_defaults(), user)
    return _build(merged, path)


def save(config_dict: Mapping[str, Any], path: Path) -> None:
    """Write `config_dict` (all or part of a configuration, e.g. only the keys
    the user changed, or ``Config.to_dict()``) to `path` as TOML, atomically.

    It is validated first: an invalid dict raises UsageError and `path` is left
    as it was.
    """
    path = Path(path)
    _validate(config_dict, str(path))
    plain = {
        section: {k: list(v) if isinstance(v, tuple) else v for k, v in table.items()}
        for section, table in config_dict.items()
    }
    data = tomli_w.dumps(plain).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
