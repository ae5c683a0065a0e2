"""Logging for the command line, configured once: -v/-q, colour only on a terminal, NO_COLOR honoured.

Library modules log through `logging.getLogger(__name__)`; messages go to stderr
(stdout stays for what a command outputs: plan, list, JSON). Per-step logs and
the console transcript are files of their own and do not go through here.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "rk3576_build"
LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
COLOURS = {logging.DEBUG: "\x1b[2m", logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m",
           logging.CRITICAL: "\x1b[31;1m"}
RESET = "\x1b[0m"


def use_colour(stream) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if "NO_COLOR" in os.environ and os.environ["NO_COLOR"] != "":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


class _Formatter(logging.Formatter):
    def __init__(self, colour: bool):
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            text = f"rk3576-build: error: {text}"
        elif record.levelno >= logging.WARNING and not text.startswith("warning:"):
            text = f"warning: {text}"
        if record.exc_info and record.levelno <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        colour = COLOURS.get(record.levelno) if self.colour else None
        return f"{colour}{text}{RESET}" if colour else text


def setup(verbosity: int = 0, stream=None) -> logging.Logger:
    """Configure the package's logger: verbosity -2..1 (-qq, -q, default, -v)."""
    stream = stream or sys.stderr
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(use_colour(stream)))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[max(-2, min(1, verbosity))])
    logger.propagate = False
    return logger


def get(name: str) -> logging.Logger:
    """A module's logger (`logs.get(__name__)`)."""
    return logging.getLogger(name)
