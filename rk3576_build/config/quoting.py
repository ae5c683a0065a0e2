"""How a recipe's error messages quote values and name choices: short, and with a did-you-mean."""

from __future__ import annotations

import difflib
from typing import Any

from rk3576_build.core.text import cut


def describe(value: Any) -> str:
    """A value as an error message quotes it (never long)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 76 else f"{value[:72]!r}... ({len(value)} characters)"
    return cut(str(value))


def listed(names: list[str], limit: int = 20) -> str:
    """Names for a "known: ..." list: each cut to 40 characters, at most `limit` of them."""
    shown = ", ".join(cut(n, 40) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def did_you_mean(word: str, choices: list[str]) -> str:
    if len(word) > 200:  # no typo is that long, and comparing long strings is slow
        return ""
    close = difflib.get_close_matches(word, [c for c in choices if len(c) <= 200], n=1)
    return f" (did you mean {describe(close[0])}?)" if close else ""

