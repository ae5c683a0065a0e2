"""A shell session on a board's serial console: log in, run a command, get output and exit status.

The only module that uses pyserial. Any URL `serial.serial_for_url` takes works:
`/dev/ttyUSB0`, a pty path, `socket://host:port`, `rfc2217://host:port`.
Login, commands, state detection and interactive programs all wait through one
primitive, `Console.expect` (as labgrid's ShellDriver builds on its console's expect).
"""

from __future__ import annotations

import codecs
import enum
import errno
import re
import secrets as _secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, cast

import serial

from rk3576_build.core.errors import UserError
from rk3576_build.core.text import strip_ansi

MASK = "********"
# A printk line as the console prints it; it can start in the middle of another line.
_PRINTK = re.compile(r"\[ *\d+\.\d+\] [^\r\n]*\r*\n")
_LOGIN_INCORRECT = re.compile(r"Login incorrect|Authentication failure|Permission denied, please try again")
# A printk line still arriving at the end of the buffer (no newline yet).
_PARTIAL_PRINTK = re.compile(r"\[ *\d+\.\d*(?:\][^\r\n]*)?$")
# What the end of the console's last line shows (searched in the last line, or at the end of the
# whole meaningful text: each pattern looks at that line only). The first that matches wins.
_LINE_START = r"(?:\A|(?<=[\r\n]))"
_UBOOT_PROMPT = re.compile(r"(?:^|\s)=>\s*$")
_PASSWORD_PROMPT = re.compile(r"(?i)password(?: for [^:\r\n]*)?:\s*$")
_LOGIN_PROMPT = re.compile(_LINE_START + r"(?![^\r\n]*(?i:last login:))[^\r\n]*login:\s*$")
_SHELL_PROMPT = re.compile(r"[#$]\s*$")
_POLL = 0.05  # the port's read timeout; longer waits loop over it
_STEP = 0.2  # the longest single read while waiting for something
WAKE_AFTER = 2.0  # seconds of silence before a newline is sent to wake the console
AFTER_PASSWORD_QUIET = 6.0  # login(1) sleeps a few seconds after a wrong password: do not interrupt
USER_ECHO_GRACE = 1.5  # seconds in which a login prompt after our user name is a stale one
SETTLE = 0.3  # seconds a prompt must stand unchanged before detect_state believes it
LOGIN_WINDOW = 16384  # characters of console output a login step looks at (a flood must not slow each step)


class ConsoleError(UserError):
    """The console cannot be reached or used (exit 2); the message names the port and what to do."""

    exit_code = 2
    report: dict | None = None  # verify's report of the run it ended, when one was written


class LoginFailed(ConsoleError):
    """The board refused the login."""


class ConsoleTimeout(ConsoleError):
    """An interactive program gave no expected answer in time; `seen` is what it printed."""

    def __init__(self, message: str, seen: str = ""):
        super().__init__(message)
        self.seen = seen


class BoardState(enum.Enum):
    BOOTING = "booting"
    LOGIN_PROMPT = "login prompt"
    PASSWORD_PROMPT = "password prompt"
    SHELL = "shell"
    UBOOT = "U-Boot"
    UNKNOWN = "unknown"


def strip_terminal(text: str) -> str:
    """Text without terminal escape sequences, BEL and NUL padding."""
    return strip_ansi(text).replace("\x07", "").replace("\x00", "")


def strip_kernel_messages(text: str) -> str:
    """Text without printk lines; one that split another line is cut out and the line rejoined."""
    return _PRINTK.sub("", text)


def session_view(text: str) -> str:
    """What a program printed: no escapes, no printk lines, no carriage returns."""
    return strip_kernel_messages(strip_terminal(text)).replace("\r", "")


def _meaningful(text: str) -> str:
    """What a person would see: no escapes, no kernel messages, no half-arrived printk line."""
    return _PARTIAL_PRINTK.sub("", strip_kernel_messages(strip_terminal(text))).rstrip()


def _last_line(text: str) -> str:
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1].rstrip() if lines else ""


# The prompts, in the order classify tries them; `expect` takes them as they stand.
_PROMPTS = ((BoardState.UBOOT, _UBOOT_PROMPT), (BoardState.PASSWORD_PROMPT, _PASSWORD_PROMPT),
            (BoardState.LOGIN_PROMPT, _LOGIN_PROMPT), (BoardState.SHELL, _SHELL_PROMPT))
_PROMPT_PATTERNS = [pattern for _, pattern in _PROMPTS]


def classify(text: str) -> BoardState:
    """The board state that console output ending with `text` shows."""
    last = _last_line(_meaningful(text))
    if not last:
        return BoardState.UNKNOWN
    return next((state for state, pattern in _PROMPTS if pattern.search(last)), BoardState.BOOTING)


def _mostly_garbage(text: str) -> bool:
    """Undecodable or control bytes dominate: what a wrong baud rate looks like."""
    if len(text) < 16:
        return False
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\r\n\t\x1b"))
    return bad * 3 > len(text)


class Masker:
    """Replaces secrets in text; used for the transcript, every message and the verify report.

    `keep` (the user name) is never masked where a secret is part of it, and a mask
    already in the text is left alone (masking twice changes nothing, even for `*`).
    """

    def __init__(self, secrets: Sequence[str] = (), keep: Sequence[str] = ()):
        self.secrets: set[str] = set()
        self.keep: set[str] = set()
        self._pattern: re.Pattern | None = None
        self.add(*secrets, keep=keep)

    def add(self, *secrets: str | None, keep: Sequence[str] = ()) -> None:
        """Mask these secrets too; keep these words whole."""
        self.secrets |= {s for s in secrets if s}
        self.keep |= {k for k in keep if k}
        protected = {MASK} | {k for k in self.keep if any(s in k for s in self.secrets)}
        # At each position the longest token wins: a secret longer than a kept word is still masked.
        tokens = sorted(protected | self.secrets, key=lambda t: (-len(t), t not in protected))
        self._pattern = re.compile("|".join(map(re.escape, tokens))) if self.secrets else None
        self._protected = protected

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: m.group(0) if m.group(0) in self._protected else MASK, text)


class Console:
    """A shell on a serial console (labgrid's ShellDriver is the model)."""

    def __init__(self, url: str, *, baud: int = 115200, transcript: Path | None = None,
                 secrets: Sequence[str] = (), exclusive: bool = True):
        self.url = url
        self.baud = baud
        self.transcript_path = transcript
        self.exclusive = exclusive
        self._mask = Masker(secrets)
        self._port: serial.Serial | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._transcript: IO[str] | None = None
        self._transcript_pending = ""
        self._recent = ""  # the last few KB received, for error messages
        self._buffer = ""  # received text since the last mark (a command sent, a login step taken)
        self._pos = 0  # where in the buffer's view the last `expect` match ended
        self.received_any = False
        self.logged_in = False

    # -- port ---------------------------------------------------------------------------
    def open(self) -> Console:
        """Open the port (exclusively for a device), or raise ConsoleError saying why not."""
        if self._port is not None:
            return self
        try:
            # Every pyserial implementation (device, socket, rfc2217) has in_waiting; SerialBase does not say so.
            self._port = cast(serial.Serial, serial.serial_for_url(self.url, baudrate=self.baud, timeout=_POLL,
                                                                   exclusive=self.exclusive or None))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConsoleError(self._open_error(exc)) from None
        if self.transcript_path is not None:
            self.transcript_path.parent.mkdir(parents=True, exist_ok=True)
            self._transcript = open(self.transcript_path, "w", encoding="utf-8", errors="replace")
        return self

    def _open_error(self, exc: Exception) -> str:
        text = str(exc)  # read unmasked (a short password can hit its words), shown masked
        code = getattr(exc, "errno", None)
        if "exclusively lock" in text or code == errno.EBUSY or "Device or resource busy" in text:
            return (f"serial console {self.url} is busy: another program (screen/minicom/picocom?) "
                    "holds it; close that program and retry")
        if code == errno.ENOENT or "No such file" in text:
            return (f"serial console {self.url} does not exist: check the board's USB debug cable "
                    "and the port name (ls /dev/ttyUSB*), or pass --console")
        if code == errno.EACCES or "Permission denied" in text:
            return (f"no permission to open serial console {self.url}: add yourself to the "
                    "'dialout' group (then log in again) or run with the needed rights")
        if "refused" in text or "timed out" in text.lower():
            return (f"serial console {self.url} is unreachable ({self._mask(text)}): is the console server "
                    "(ser2net / the virtual board) running on that host and port?")
        return f"cannot open serial console {self.url}: {self._mask(text)}"

    def close(self) -> None:
        """Close the port and finish the transcript."""
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None
        if self._transcript is not None:
            self._transcript.write(self._mask(self._transcript_pending))
            self._transcript_pending = ""
            self._transcript.close()
            self._transcript = None

    def __enter__(self) -> Console:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raw I/O ------------------------------------------------------------------------
    def _read(self, wait: float = _POLL) -> str:
        """Whatever arrives within `wait` seconds, decoded (bad bytes replaced) and recorded."""
        if self._port is None:
            raise ConsoleError(f"serial console {self.url} is not open")
        deadline = time.monotonic() + wait
        data = b""
        try:
            while not data:
                # read(1) returns as soon as a byte is there (a big read would sit out the
                # port timeout); then take what is waiting (a socket reports 0/1, not a count).
                data = self._port.read(1)
                while data and self._port.in_waiting:
                    data += self._port.read(self._port.in_waiting)
                if time.monotonic() >= deadline:
                    break
        except (serial.SerialException, OSError) as exc:
            raise ConsoleError(f"serial console {self.url} failed while reading ({self._mask(str(exc))}): "
                               "was the cable unplugged or the console server stopped?") from None
        if not data:
            return ""
        self.received_any = True
        text = self._decoder.decode(data)
        self._record(text)
        self._buffer += text
        self._recent = (self._recent + text)[-4000:]
        return text

    def _record(self, text: str) -> None:
        if self._transcript is None:
            return
        # Whole lines only, so a secret split across two reads is still masked.
        self._transcript_pending += text
        head, sep, tail = self._transcript_pending.rpartition("\n")
        if sep:
            self._transcript.write(self._mask(head + sep))
            self._transcript.flush()
            self._transcript_pending = tail

    def _send(self, text: str) -> None:
        if self._port is None:
            raise ConsoleError(f"serial console {self.url} is not open")
        try:
            self._port.write(text.encode())
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise ConsoleError(f"serial console {self.url} failed while writing ({self._mask(str(exc))})") from None

    def _drain(self) -> None:
        """Forget earlier output (taking in what already waits, without waiting)."""
        if self._port is not None and self._port.in_waiting:
            self._read(0)
        self._mark()

    def _mark(self) -> None:
        """What came so far is consumed: the next `expect` looks only at what comes from now on."""
        self._buffer = ""
        self._pos = 0

    def _excerpt(self, text: str, size: int = 300) -> str:
        return self._mask(strip_terminal(text)[-size:]).strip()

    # -- the one wait ------------------------------------------------------------------
    def expect(self, patterns: Sequence[re.Pattern[str]], *, timeout: float, what: str,
               view: Callable[[str], str] = session_view, quiet: float = 0.0,
               wake: Callable[[], bool] | None = None, window: int | None = None) -> tuple[int, re.Match[str]]:
        """Read until one of `patterns` shows after the previous match; return (its index, the match).

        The patterns are searched in `view` of what came since the last mark (default: no
        escapes, no printk lines, no carriage returns); the earliest match wins. `quiet`: a
        match counts once the view has stood still that long. `wake` is called after
        WAKE_AFTER seconds of nothing new (True: it sent something). `window` keeps only the
        last so many characters. Raises ConsoleTimeout (with the text seen) after `timeout`;
        whatever runs on the board keeps running.
        """
        start = self._pos
        deadline = time.monotonic() + timeout
        shown, changed = None, time.monotonic()
        while True:
            if window is not None and len(self._buffer) > window:
                self._buffer, self._pos = self._buffer[-window:], 0
            text = view(self._buffer)
            now = time.monotonic()
            if text != shown:
                shown, changed = text, now
            found = [(m.start(), i, m) for i, p in enumerate(patterns) if (m := p.search(text, self._pos))]
            if found and now - changed >= quiet:
                _, index, match = min(found, key=lambda f: (f[0], f[1]))
                self._pos = match.end()
                return index, match
            if now >= deadline:
                raise ConsoleTimeout(f"no {what} on {self.url} within {timeout:.0f} s; last output: "
                                     f"{self._excerpt(text[start:])!r}", seen=self._mask(text[start:]))
            if wake is not None and now - changed >= WAKE_AFTER and wake():
                changed = now
            wait = deadline - now
            if found:
                wait = min(wait, quiet - (now - changed))
            self._read(min(_STEP, max(0.01, wait)))

    # -- states and login ---------------------------------------------------------------
    def detect_state(self, timeout: float) -> BoardState:
        """Wake the console with a newline and classify what comes back within `timeout`."""
        self._drain()
        self._send("\n")
        try:
            self.expect(_PROMPT_PATTERNS, timeout=timeout, what="prompt", view=_meaningful, quiet=SETTLE)
        except ConsoleTimeout:
            pass  # still booting, silent, or garbage: classified below
        state = classify(self._buffer)
        if state is BoardState.SHELL and not self._shell_answers(min(3.0, max(1.0, timeout))):
            state = classify(self._buffer)  # what came instead of the marker (a login prompt?)
            if state is BoardState.SHELL:
                state = BoardState.BOOTING
        if state is BoardState.BOOTING and (not _meaningful(self._buffer) or _mostly_garbage(self._buffer)):
            state = BoardState.UNKNOWN
        return state

    def login(self, user: str, password: str | None, *, timeout: float) -> None:
        """Get to a shell as `user`, waiting up to `timeout` s for a board still booting."""
        self._mask.add(password, keep=[user])
        deadline = time.monotonic() + timeout
        sent: dict[str, float] = {}  # "user", "password": when it was last typed
        users = 0

        def wake() -> bool:
            # Kernel messages are no progress: a flood must not keep us from waking the console.
            if time.monotonic() - sent.get("password", -AFTER_PASSWORD_QUIET) < AFTER_PASSWORD_QUIET:
                return False  # login(1) is still thinking about the password
            self._send("\n")
            return True

        signs = [_LOGIN_INCORRECT, *_PROMPT_PATTERNS]
        self._mark()
        self._send("\n")  # wake the console: a getty answers with a fresh prompt
        while True:
            try:
                index, _ = self.expect(signs, timeout=max(0.0, deadline - time.monotonic()), what="login prompt",
                                       view=_meaningful, wake=wake, window=LOGIN_WINDOW)
            except ConsoleTimeout:
                raise ConsoleError(self._login_timeout_message(timeout, self._recent)) from None
            if index == 0:
                if users:
                    raise LoginFailed(f"the board on {self.url} refused the login of user {user!r} "
                                      "(Login incorrect): check the user and the password "
                                      "(RK3576_CONSOLE_PASSWORD or the recipe's verify.password_env)")
                continue
            state = _PROMPTS[index - 1][0]
            if state is BoardState.UBOOT:
                raise ConsoleError(f"the board on {self.url} is in U-Boot (\"=>\" prompt), not Linux: "
                                   "type `boot` (or `reset`) on the console, or power-cycle it, then retry")
            if state is BoardState.LOGIN_PROMPT:
                # The wake-up newline can make getty print a second prompt while our
                # user name is on its way: that stale prompt must not get the name
                # again (it would be read as the password).
                if time.monotonic() - sent.get("user", -USER_ECHO_GRACE) < USER_ECHO_GRACE:
                    continue
                if users >= 3:
                    raise LoginFailed(f"the board on {self.url} keeps asking for a login name: "
                                      f"user {user!r} is not accepted")
                self._mark()
                self._send(user + "\n")
                users += 1
                sent["user"] = time.monotonic()
            elif state is BoardState.PASSWORD_PROMPT:
                if password is None:
                    raise LoginFailed(f"the board on {self.url} asks for a password for {user!r} and none "
                                      "was given: set RK3576_CONSOLE_PASSWORD (or the variable named by "
                                      "--password-env) or run on a terminal to be asked")
                self._mark()
                self._send(password + "\n")
                sent["password"] = time.monotonic()
            elif self._shell_answers(min(5.0, max(1.0, deadline - time.monotonic()))):
                break
        self.logged_in = True
        # Keep kernel messages off the console while commands run (labgrid does the same).
        self.run("dmesg -n 1 2>/dev/null", timeout=max(5.0, min(30.0, deadline - time.monotonic())))

    def _login_timeout_message(self, timeout: float, seen: str) -> str:
        if not self.received_any:
            return (f"no answer from the serial console {self.url} within {timeout:.0f} s: check the "
                    f"cable, that the board is powered, and the baud rate ({self.baud})")
        if _mostly_garbage(seen):
            return (f"only unreadable bytes from {self.url} within {timeout:.0f} s: the baud rate "
                    f"({self.baud}) is probably wrong (RK3576 consoles run at 115200, some U-Boot "
                    "builds at 1500000); pass --baud")
        return (f"the board on {self.url} gave no login prompt or shell within {timeout:.0f} s "
                f"(still booting, or hung?); last output: {self._excerpt(seen)!r}")

    def _shell_answers(self, timeout: float) -> bool:
        """Does a shell answer a marker echo? (A `#`/`$` line can be just text.)"""
        try:
            _, status = self._run(":", timeout=timeout, interrupt=False)
        except ConsoleError:
            return False
        return status == 0

    def logout(self) -> None:
        """Leave the shell (back to the login prompt), so no root shell stays open on the console."""
        if self._port is not None and self.logged_in:
            self._drain()
            self._send("exit\n")
            self._read(0.2)  # let the shell take it; the next login wakes whatever comes then
            self.logged_in = False

    def sudo_validate(self, password: str | None, *, timeout: float = 30) -> None:
        """Refresh sudo's credentials for a non-root user, answering its password prompt."""
        prompt = "rk3576-sudo-password:"
        marker = _secrets.token_hex(6)
        asked = re.compile(re.escape(prompt) + r"\s*$")
        done = re.compile(re.escape(marker) + r" (\d+)")
        self._drain()
        self._send(f"sudo -v -p '{prompt[:5]}''{prompt[5:]}' ; echo '{marker[:6]}''{marker[6:]}' $?\n")
        deadline = time.monotonic() + timeout
        waiting = [asked, done]
        try:
            while True:
                _, match = self.expect(waiting, timeout=max(0.0, deadline - time.monotonic()),
                                       what="answer from sudo", view=strip_terminal)
                if match.re is done:
                    break
                if password is None:
                    self._send("\x03")
                    raise LoginFailed(f"sudo on {self.url} asks for a password and none was given")
                self._send(password + "\n")
                waiting = [done]
        except ConsoleTimeout:
            self._send("\x03")
            raise ConsoleError(f"sudo on {self.url} did not answer within {timeout:.0f} s") from None
        if match.group(1) != "0":
            raise LoginFailed(f"sudo on {self.url} refused the user: it needs sudo rights "
                              "for debugfs (or log in as root)")

    # -- commands -----------------------------------------------------------------------
    def run(self, command: str, *, timeout: float = 30, keep_kernel_lines: bool = False) -> tuple[str, int]:
        """Run `command` in the shell; return (output, exit status).

        printk lines landing in the output are cut out, unless `keep_kernel_lines`
        (for commands such as dmesg whose own output looks like them).
        """
        return self._run(command, timeout=timeout, interrupt=True, keep_kernel_lines=keep_kernel_lines)

    def _run(self, command: str, *, timeout: float, interrupt: bool,
             keep_kernel_lines: bool = False) -> tuple[str, int]:
        self._drain()
        marker = "RK" + _secrets.token_hex(8)
        half = len(marker) // 2
        quoted = f"'{marker[:half]}''{marker[half:]}'"
        # The echo of this line shows the marker split by quotes: only printf output joins it.
        self._send(f"printf '%s\\n' {quoted}; {command}; printf '%s %d\\n' {quoted} $?\n")
        framing = re.compile(re.escape(marker) + r"\n(.*?)" + re.escape(marker) + r" (\d+)\n", re.S)
        view = (lambda text: strip_terminal(text).replace("\r", "")) if keep_kernel_lines else session_view
        try:
            _, match = self.expect([framing], timeout=timeout, what="complete answer", view=view)
        except ConsoleTimeout:
            if interrupt:
                self._send("\x03")  # get the shell back for whatever comes next
            raise ConsoleError(f"`{self._mask(command)}` gave no complete answer on {self.url} within "
                               f"{timeout:.0f} s; last output: {self._excerpt(self._buffer)!r}") from None
        self._mark()
        return match.group(1).rstrip("\n"), int(match.group(2))

    # -- interactive programs -----------------------------------------------------------
    def start(self, command: str) -> None:
        """Start an interactive `command` in the shell; follow it with `expect` and `send_line`."""
        self._drain()
        self._send(command + "\n")

    def send_line(self, text: str) -> None:
        """Type one line into the running program."""
        self._send(text + "\n")

    def session_text(self) -> str:
        """What came since `start`: no escapes, no printk lines, no carriage returns."""
        return session_view(self._buffer)

    def recover_shell(self, timeout: float = 15) -> bool:
        """Stop whatever runs in the foreground (Ctrl-C, again, then Ctrl-\\); True once the shell answers."""
        deadline = time.monotonic() + timeout
        for key in ("\x03", "\x03", "\x1c"):
            self._send(key)
            self._read(0.5)
            if self._shell_answers(min(4.0, max(1.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                break
        return False
