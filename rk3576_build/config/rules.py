"""Rules the recipe's checks and the build phases share: environment names build.sh refuses, accepted ids."""

from __future__ import annotations

from collections.abc import Callable, Collection

from rk3576_build.core.errors import UserError
from rk3576_build.core.text import cut


def refused_env_name(name: str) -> str | None:
    """Why Rockchip's build.sh cannot take `name` from its environment (an RK_* name), or None when it can."""
    if not name.startswith("RK_"):
        return None
    return (f"{cut(name)} is refused: Rockchip's build.sh treats RK_* variables in its environment as custom "
            "overrides and stops to ask (`read -t 10 -p \"Press enter to continue.\"`), which fails at "
            "once without a terminal and ends the build. Put the setting in the SDK's defconfig "
            "(device/rockchip/.chips/<chip>/<name>_defconfig, or `./build.sh menuconfig`) instead")


def refuse_unknown_ids(where: str, accepted: Collection[str], known: Collection[str], *, kind: str = "id",
                       also: str = "", allowed: Callable[[str], bool] | None = None) -> None:
    """A UserError naming the ids in `accepted` (a recipe's accept list, `where`) that name no known finding."""
    unknown = sorted(a for a in set(accepted) if a not in known and not (allowed and allowed(a)))
    if unknown:
        raise UserError(f"{where} names unknown {kind}(s): {', '.join(unknown)}; "
                        f"known ids: {', '.join(sorted(known))}{also}")
