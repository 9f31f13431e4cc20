"""One registry type for every family of named parts: neuron kinds and models, generators, optimizers.

Like timm's model registry: a name maps to a factory (a class or a function) and a few facts about it
that can be read without building anything (`info`). Installed packages add names through an
entry-point group; a plugin is imported only when its name is first used, so a broken plugin fails its
own name alone, and it cannot replace a built-in name.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from evolver_common.errors import BadInput, nearest

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered name: its factory (loaded on first use for a plugin) and facts about it."""

    name: str
    factory: T | None
    info: dict[str, Any] = field(default_factory=dict)
    entry_point: importlib.metadata.EntryPoint | None = None

    @property
    def plugin(self) -> str | None:
        """The entry point's value (`package.module:Name`) of a plugin's entry; None for a built-in."""
        return self.entry_point.value if self.entry_point else None


class Registry(Generic[T]):
    """name -> factory, with closest-name errors and entry-point discovery.

    Args:
        kind: what the names are, for messages ('generator', 'optimizer', 'neuron kind', 'model').
        group: the entry-point group installed packages register in (None: no plugins).
        hint: a sentence appended to unknown-name errors (where valid names are listed).
    """

    def __init__(self, kind: str, group: str | None = None, hint: str = ""):
        self.kind, self.group, self.hint = kind, group, hint
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_read = group is None

    def register(self, name: str, factory: T, **info: Any) -> T:
        """Make `factory` available as `name` (replacing an earlier registration of it); returns it,
        so that it can be used as a decorator's body."""
        self._entries[name] = Entry(name, factory, info)
        return factory

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        for point in importlib.metadata.entry_points(group=self.group):
            if point.name not in self._entries:
                self._entries[point.name] = Entry(point.name, None, {}, point)

    def __contains__(self, name: str) -> bool:
        self._read_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def available(self) -> list[str]:
        """Every registered name, sorted."""
        self._read_plugins()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry of `name` without loading a plugin; BadInput naming the closest names if unknown."""
        if name not in self:
            raise BadInput(f"Unknown {self.kind} '{name}' (closest: {nearest(name, self._entries)}). "
                           f"Valid {self.kind}s: {', '.join(self.available())}.{' ' + self.hint if self.hint else ''}")
        return self._entries[name]

    def get(self, name: str) -> T:
        """The factory registered as `name` (a plugin is imported now)."""
        entry = self.entry(name)
        if entry.factory is not None:
            return entry.factory
        try:
            factory = entry.entry_point.load()
        except Exception as err:  # noqa: BLE001 - any import error of a third-party package
            raise BadInput(f"The {self.kind} plugin '{name}' ({entry.plugin}) could not be loaded: "
                           f"{type(err).__name__}: {err}.") from None
        self._entries[name] = Entry(name, factory, entry.info, entry.entry_point)
        return factory

    def create(self, name: str, *args: Any, **options: Any) -> Any:
        """`get(name)(*args, **options)`."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **options)

    def registered(self) -> list[Entry[T]]:
        """The entries registered in this process, not by plugins (a worker process re-registers them)."""
        return [e for e in self._entries.values() if e.entry_point is None]
