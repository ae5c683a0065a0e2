"""The one exception type for errors a user can cause and fix."""


class UserError(Exception):
    """A problem the user can fix: shown as one message, never a traceback.

    `exit_code` is what the command line exits with (2 unless a module says
    otherwise, e.g. verify uses 1 for a failed check).
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so every `finally` cleans up; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def raise_stopped(signum, frame):
    """A signal handler: turn the signal into `Stopped`."""
    raise Stopped(signum)
