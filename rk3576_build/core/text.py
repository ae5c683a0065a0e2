"""Text as the tool shows it: terminal escapes removed, credentials redacted, sizes and long values made readable."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Terminal escapes: CSI (colours, cursor), OSC (titles), charset selection, other 2-byte ones.
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])")
# scheme://user:password@ -> scheme:// (linear: the scheme is anchored at a non-scheme character)
_USERINFO_RE = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def plain(text: str) -> str:
    """Text without escapes and with plain newlines (a terminal's CR LF and lone CRs become LF)."""
    return strip_ansi(text).replace("\r\n", "\n").replace("\r", "\n")


def redact_url(url: str) -> str:
    """`url` (or any text holding URLs) without user names and passwords."""
    return _USERINFO_RE.sub(r"\1", url)


def redact(value):
    """`value` with every URL's user name and password removed: text, or dicts and lists of it."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    return value


def human_size(count: float) -> str:
    """`count` bytes for a message: 100 B, 195.3 KiB, 3.0 MiB, 64.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def cut(text: str, limit: int = 80) -> str:
    """`text` as an error message shows it: at most `limit` characters, then an ellipsis and the length."""
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"
