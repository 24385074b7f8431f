"""Small helpers for the words the app shows (counts with the right plural, one place)."""

from __future__ import annotations


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 object"``, ``"2 objects"``, ``"0 objects"``."""
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"
