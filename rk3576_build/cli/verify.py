"""`rk3576-build verify`: its options (the recipe's verify section fills their defaults), the check, the summary.

The summary, `--compare` and `--history` tables are the command's output (stdout); the
checks themselves are board/verify.py. Exit 0 pass, 1 mismatch or a failed check,
2 console trouble (or a check that could not run).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rk3576_build.cli.base import Command, Context, finish
from rk3576_build.core import logs
from rk3576_build.core.errors import UserError


class Verify(Command):
    name = "verify"
    help = "check the driver version on a board's serial console (exit 0 pass, 1 mismatch, 2 unreachable)"
    description = ("Check the RKNPU driver version on the board over its serial console and, with a model set "
                   "(verify.rkllm, verify.multimodal), run the RKLLM text and multimodal checks.")

    def __init__(self, defaults: Mapping | None = None, *, default_out: Path | None = None,
                 chip: str | None = None):
        self.defaults = dict(defaults or {})  # the recipe's verify section
        self.default_out = default_out  # where the reports go without --out
        self.chip = chip  # the recipe's lunch.chip: the platform the RKLLM runtime must report

    def configure(self, ctx: Context) -> None:
        from rk3576_build.config.layout import Layout  # lazy: keeps --help fast (the recipe model)

        recipe = ctx.recipe()
        self.defaults = recipe.section("verify")
        self.default_out = Layout(recipe).verify
        self.chip = recipe.lunch.chip

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from rk3576_build.board.verify import defaults  # lazy: keeps --help fast (pyserial)

        d = {**defaults(), **{k: v for k, v in self.defaults.items() if v is not None}}
        parser.add_argument("--console", "--port", dest="console", default=d.get("console"),
                            help="serial console: /dev/ttyUSB0, socket://host:port, rfc2217://host:port"
                                 + (f" (default {d['console']})" if d.get("console") else ""))
        parser.add_argument("--baud", type=int, default=d["baud"], help=f"baud rate (default {d['baud']})")
        parser.add_argument("--user", default=d["user"], help=f"login user (default {d['user']})")
        parser.add_argument("--password-env", default=d["password_env"],
                            help=f"environment variable holding the password (default {d['password_env']}); "
                                 "on a terminal you are asked when it is unset")
        parser.add_argument("--expected", default=d["expected"],
                            help=f"expected version line (default {d['expected']!r})")
        parser.add_argument("--login-timeout", type=float, default=d["login_timeout"],
                            help=f"seconds to wait for a booting board (default {d['login_timeout']:g})")
        parser.add_argument("--command-timeout", type=float, default=d["command_timeout"], help=argparse.SUPPRESS)
        lab = parser.add_argument_group("board farm (labgrid, docs/labgrid.md)")
        lab.add_argument("--place", default=d.get("place"),
                         help="labgrid place: acquire it, use its serial console, release it afterwards"
                              + (f" (default {d['place']})" if d.get("place") else ""))
        lab.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="labgrid coordinator (default $LG_COORDINATOR, else 127.0.0.1:20408)")
        lab.add_argument("--power-cycle", action="store_true",
                         help="switch the place's board off and on (its NetworkPowerPort) before logging in")
        parser.add_argument("--out", type=Path, default=None,
                            help="directory for the report, JUnit XML and transcript")
        parser.add_argument("--compare", nargs="+", type=Path, metavar="REPORT",
                            help="OLD_REPORT.json: after the run, print its figures beside this run's with the "
                                 "change; OLD NEW: compare two reports without a board")
        parser.add_argument("--history", type=Path, metavar="FILE.jsonl",
                            help="a history file: print this run's figures beside the last run's in it, then "
                                 "append this run")
        for check, title in CHECKS.items():
            group = parser.add_argument_group(f"{title} (the recipe's verify.{check} section; any option turns it on)")
            for key, kind, metavar, text in check_options(check):
                group.add_argument(f"--{check}-{key.replace('_', '-')}", dest=f"{check}_{key}", type=kind,
                                   metavar=metavar, default=None, help=text)
            group.add_argument(f"--no-{check}", action="store_true",
                               help=f"skip the {title} the recipe configures")

    def run(self, ctx: Context | None, args: argparse.Namespace) -> int:
        # lazy: keeps --help fast (pyserial; labgrid_place, whose labgrid is imported only for a place)
        from rk3576_build.board.labgrid_place import through_place
        from rk3576_build.board.verify import (
            REPORT_NAME,
            VerifySettings,
            append_history,
            compare,
            get_password,
            load_report,
            summary,
            verify_board,
        )

        if args.compare and len(args.compare) > 2:
            raise UserError("--compare takes OLD_REPORT.json, or OLD NEW to compare two reports")
        old = load_report(args.compare[0]) if args.compare else None
        if old is not None and len(args.compare) == 2:
            print(compare(old, load_report(args.compare[1]), str(args.compare[0]), str(args.compare[1])))
            return 0
        rkllm = rkllm_settings(args, self.defaults.get("rkllm"))
        multimodal = check_settings("multimodal", args, self.defaults.get("multimodal"))
        if not args.console and not args.place:
            raise UserError("no serial console given: pass --console /dev/ttyUSB0 (or socket://host:port), "
                            "--place NAME (labgrid) or set verify.console in the recipe")
        settings = VerifySettings(console=args.console, baud=args.baud, user=args.user,
                                  password_env=args.password_env, expected=args.expected,
                                  login_timeout=args.login_timeout, command_timeout=args.command_timeout,
                                  place=args.place, rkllm=rkllm, multimodal=multimodal)
        out_dir = args.out or self.default_out or Path("verify")
        password = get_password(settings)
        try:
            with through_place(settings, coordinator=args.coordinator, power_cycle=args.power_cycle) as board:
                report = verify_board(board, out_dir, password=password, chip=self.chip)
        except UserError as exc:
            failed = getattr(exc, "report", None)  # the console failed: the reports are written all the same
            if failed:
                print(summary(failed, out_dir))
            raise
        print(summary(report, out_dir))
        if old is not None:
            print(compare(old, report, str(args.compare[0]), str(out_dir / REPORT_NAME)))
        if args.history:
            previous = append_history(args.history, report)
            if previous is not None:
                print(compare(previous, report, f"last run in {args.history}", "this run"))
        return {"passed": 0, "failed": 1}.get(report["status"], 2)


# The model checks, each a section of the recipe's verify and a group of options (--<check>-*, --no-<check>).
CHECKS = {"rkllm": "RKLLM check", "multimodal": "multimodal check"}


def check_options(check: str) -> list[tuple[str, type, str, str]]:
    """(key, type, metavar, help) of each `--<check>-*` option: one per key of the schema's verify.<check>."""
    # lazy: keeps --help fast (the schema loads the recipe model)
    from rk3576_build.config.combinators import Int, Nullable, Number
    from rk3576_build.config.schema import MULTIMODAL_DEFAULTS, RKLLM_DEFAULTS, section_keys

    defaults = {"rkllm": RKLLM_DEFAULTS, "multimodal": MULTIMODAL_DEFAULTS}[check]
    options = []
    for key, spec in section_keys(f"verify.{check}").items():
        inner = spec.type.inner if isinstance(spec.type, Nullable) else spec.type
        kind: type = int if isinstance(inner, Int) else float if isinstance(inner, Number) else str
        metavar = "N" if kind is not str else key.rpartition("_")[2].upper()
        text = spec.doc.partition("; null:")[0].replace("%", "%%")
        if key in defaults:
            text += f" (default {defaults[key]})"
        options.append((key, kind, metavar, text))
    return options


def rkllm_options() -> list[tuple[str, type, str, str]]:
    """(key, type, metavar, help) of each `--rkllm-*` option."""
    return check_options("rkllm")


def check_settings(check: str, args: argparse.Namespace, recipe: Mapping | None) -> dict | None:
    """The recipe's verify.<check> with the command line's --<check>-* on top; None: that check does not run."""
    # lazy: keeps --help fast (pyserial)
    from rk3576_build.board.verify import MODEL_CHECKS

    if getattr(args, f"no_{check}"):
        return None
    given: dict[str, Any] = {key: getattr(args, f"{check}_{key}") for key, *_ in check_options(check)}
    given = {k: v for k, v in given.items() if v is not None}
    merged = {**{k: v for k, v in (recipe or {}).items() if v is not None}, **given}
    settings_class = MODEL_CHECKS[check][0]
    if not settings_class.wanted(merged) and not given:
        return None  # the check runs when the recipe or an option asks for it (its model is set)
    settings_class.from_mapping(merged)  # a clear error now, before the console is opened
    return merged


def rkllm_settings(args: argparse.Namespace, recipe: Mapping | None) -> dict | None:
    """The recipe's verify.rkllm with the command line's --rkllm-* on top; None: no RKLLM check."""
    return check_settings("rkllm", args, recipe)


def build_parser(defaults: Mapping | None = None) -> argparse.ArgumentParser:
    """The verify options with `defaults` (a verify section) filled in."""
    return Verify(defaults).parser()


def main(argv: Sequence[str], defaults: Mapping | None = None, default_out: Path | None = None,
         chip: str | None = None) -> int:
    """`rk3576-build verify` over `defaults` (a verify section) instead of a recipe's; its exit code.

    `chip` is the platform the RKLLM runtime must report (a recipe's lunch.chip).
    """
    logs.setup(0)
    command = Verify(defaults, default_out=default_out, chip=chip)
    return finish(lambda: command.run(None, command.parse(argv)))
