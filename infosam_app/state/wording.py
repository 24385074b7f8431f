"""Small helpers for the words the app shows (counts with the right plural, one place)."""

from __future__ import annotations


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 object"``, ``"2 objects"``, ``"0 objects"``."""
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"


def adapter_name(method: str) -> str:
    """A PEFT method's trained weights in words: ``"lora adapter"``, and ``"adapter"`` for the method called
    adapter (not "adapter adapter")."""
    return "adapter" if method.strip().lower() == "adapter" else f"{method} adapter"
