"""`${VAR}`, `${VAR:-default}` (nested) and `$$` in recipe strings."""

from __future__ import annotations

import re
from collections.abc import Callable

from rk3576_build.config.quoting import describe
from rk3576_build.core.text import cut

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpandError(Exception):
    pass


def expand(text: str, lookup: Callable[[str], str | None]) -> tuple[str, bool]:
    """Expand ${VAR}, ${VAR:-default} (nested) and $$; returns (result, whether a ${...} was used)."""
    used = False

    def parse(i: int, in_default: bool, active: bool) -> tuple[str, int]:
        nonlocal used
        out: list[str] = []
        while i < len(text):
            if text.startswith("$$", i):
                out.append("$")
                i += 2
            elif text.startswith("${", i):
                used = True
                match = _NAME.match(text, i + 2)
                if not match:
                    raise ExpandError(_bad_ref(text))
                name, i = match.group(), match.end()
                value = lookup(name) if active else ""
                if text.startswith(":-", i):
                    default, i = parse(i + 2, True, active and not value)
                    value = value or default
                elif text.startswith("}", i):
                    if active and value is None:
                        raise ExpandError(f"undefined variable ${{{cut(name, 40)}}} (set it in the "
                                           f"environment or use ${{{cut(name, 40)}:-default}})")
                else:
                    raise ExpandError(_bad_ref(text))
                if not text.startswith("}", i):
                    raise ExpandError(_bad_ref(text))
                out.append(value or "")
                i += 1
            elif in_default and text[i] == "}":
                return "".join(out), i
            else:
                out.append(text[i])
                i += 1
        if in_default:
            raise ExpandError(_bad_ref(text))
        return "".join(out), i

    result, _ = parse(0, False, True)
    return result, used


def _bad_ref(text: str) -> str:
    return (f"bad variable reference in {describe(text)}: use ${{NAME}} or ${{NAME:-default}} "
            "(write $$ for a literal $)")

