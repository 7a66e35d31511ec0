"""Named extensions of one kind (engines, launchers): the built-in ones and those a user's conftest registers through
the `pytest_llmconform_*` hooks, looked up by the name a matrix gives."""

from __future__ import annotations

from typing import Generic, TypeVar

from llmconform.errors import UserError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """name -> extension. A second extension of another type under a taken name is refused (two conftests
    disagreeing); the same type again replaces it (a conftest loaded twice)."""

    def __init__(self, kind: str, members: tuple[str, ...] = ()):
        super().__init__()
        self.kind = kind
        self.members = members  # what every extension must have besides its name (a protocol's attributes)

    def add(self, extension: T) -> None:
        name = getattr(extension, "name", None)
        if not name:
            raise UserError(f"{self.kind} {type(extension).__qualname__} has no name")
        missing = [member for member in self.members if not hasattr(extension, member)]
        if missing:
            raise UserError(f"{self.kind} {name!r} ({type(extension).__qualname__}) lacks {', '.join(missing)} "
                            f"(every {self.kind} has: name, {', '.join(self.members)})")
        known = super().get(name)
        if known is not None and type(known) is not type(extension):
            raise UserError(f"{self.kind} {name!r} is already registered ({type(known).__qualname__})")
        self[name] = extension

    def named(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self))})") from None
