"""Which files of a share a clone fetches: `--include GLOB` / `--exclude GLOB`.

Patterns are gitignore-style (as in `.datignore`): `*.csv` matches at any
depth, `raw/` a folder and everything in it, `/top.txt` only at the top.
A file is selected when no include is given or one matches it, and no
exclude matches it. The selection is kept in the clone's state, so `pull`
continues with the same one; a wider selection later fetches only what is new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pathspec

from .errors import UsageError


@dataclass(frozen=True, slots=True)
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _inc: pathspec.PathSpec | None = field(default=None, init=False, compare=False, repr=False)
    _exc: pathspec.PathSpec | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for p in (*self.include, *self.exclude):
            if not p.strip() or "\n" in p or "\0" in p:
                raise UsageError(f"pattern {p!r} is empty or spans lines: give one glob per "
                                 "--include/--exclude, e.g. --include '*.csv'")
        object.__setattr__(self, "_inc", pathspec.GitIgnoreSpec.from_lines(self.include)
                           if self.include else None)
        object.__setattr__(self, "_exc", pathspec.GitIgnoreSpec.from_lines(self.exclude)
                           if self.exclude else None)

    @property
    def everything(self) -> bool:
        return not self.include and not self.exclude

    def wants(self, path: str) -> bool:
        inc, exc = self._inc, self._exc
        if inc is not None and not inc.match_file(path):
            return False
        return exc is None or not exc.match_file(path)

    def to_json(self) -> str:
        return json.dumps({"include": list(self.include), "exclude": list(self.exclude)})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "Selection":
        if not text:
            return cls()
        try:
            d = json.loads(text)
            return cls(tuple(map(str, d.get("include", ()))), tuple(map(str, d.get("exclude", ()))))
        except (ValueError, AttributeError, TypeError, UsageError):
            return cls()  # a damaged record: everything, as before any selection

    def describe(self) -> str:
        parts = [f"including {', '.join(self.include)}"] if self.include else []
        parts += [f"excluding {', '.join(self.exclude)}"] if self.exclude else []
        return "; ".join(parts) or "every file"
