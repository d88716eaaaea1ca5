"""Named choices: every place where a user picks something by name (a sampling strategy, a generator,
a model family, a question type, a POPE split...) looks it up in a `Registry`, which suggests the
closest name when one is mistyped (as lm-evaluation-harness's registries do).

    STRATEGIES = Registry("sampling strategy")

    @STRATEGIES.register("sqrt-error")
    def sqrt_error(acc): ...

    STRATEGIES.get("sqrt-eror")  # DataError: unknown sampling strategy 'sqrt-eror' (did you mean 'sqrt-error'?); known: ...
"""
from __future__ import annotations

import difflib
from typing import Generic, Hashable, Iterator, TypeVar

from .errors import DataError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from names to things, filled by `register` and read by `get`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[Hashable, T] = {}

    def register(self, name: Hashable, item: T | None = None):
        """`registry.register(name, item)`, or `@registry.register(name)` above a function or class."""
        if item is not None:
            self._add(name, item)
            return item

        def deco(obj):
            self._add(name, obj)
            return obj
        return deco

    def _add(self, name: Hashable, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: Hashable) -> T:
        """The thing registered as `name`; DataError naming the closest known name otherwise."""
        if name in self._items:
            return self._items[name]
        raise DataError(self.unknown(name))

    def check(self, name: Hashable) -> Hashable:
        """`name` itself if known (for validators); ValueError with the suggestion otherwise."""
        if name not in self._items:
            raise ValueError(self.unknown(name))
        return name

    def unknown(self, name: Hashable) -> str:
        known = [str(k) for k in self._items]
        hint = closest(name, known) if isinstance(name, str) else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}"

    def names(self) -> list:
        return list(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def closest(name: str, known: list[str]) -> str:
    """' (did you mean X?)' for the known name closest to `name`, or ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

