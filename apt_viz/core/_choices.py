"""One check for every ``str`` Enum choice: a member, or a one-line ``ValueError`` naming the choices."""
from __future__ import annotations

import enum
from typing import Any


def as_choice(enum_type: type[enum.Enum], value: Any, what: str) -> Any:
    """``value`` as a member of ``enum_type``; a one-line ``ValueError`` naming the choices otherwise."""
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in enum_type)
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}") from None
