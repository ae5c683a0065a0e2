"""Console layer over a pty whose far end a thread plays: what a QEMU board cannot produce."""

from __future__ import annotations

import fcntl
import os
import random
import re
import select
import socket
import threading
import time
import tty

import pytest

from helpers import wait_until
from rk3576_build.board.console import (
    MASK,
    BoardState,
    Console,
    ConsoleError,
    ConsoleTimeout,
    LoginFailed,
    classify,
    strip_kernel_messages,
    strip_terminal,
)

PASSWORD = "tr0ub4dor&3-pty"
FRAMED = re.compile(r"printf '%s\\n' '(\w+)''(\w+)'; (.*); printf '%s %d\\n' '\w+''\w+' \$\?$")
BASH_PROMPT = "\x1b[?2004hroot@myd-lr3576:~# "
ASH_PROMPT = "root@myd-lr3576:~# \x1b[6n"
SUDO = re.compile(r"sudo -v -p '([\w-]+)''([\w:-]+)' ; echo '(\w+)''(\w+)' \$\?$")


class FakeBoard:
    """The board end of a pty: getty/login/shell as Ubuntu or busybox prints them, or a broken line."""

    def __init__(self, mode: str = "linux", *, prompt: str = BASH_PROMPT, start: str = "login",
                 login_delay: float = 0.2, inject_kmsg: bool = False, echo_password: bool = False,
                 commands: dict[str, tuple[bytes, int]] | None = None, password: str = PASSWORD):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.mode, self.prompt, self.state = mode, prompt, start
        self.login_delay, self.inject_kmsg, self.echo_password = login_delay, inject_kmsg, echo_password
        self.password = password  # root's, for login and sudo
        self.commands = {"cat /sys/kernel/debug/rknpu/version": (b"RKNPU driver: v0.9.8\n", 0),
                         "false": (b"", 1), **(commands or {})}
        self.ran: list[str] = []
        self.received = b""
        self._line = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeBoard:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)

    def send(self, data: str | bytes) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def _serve(self) -> None:
        if self.mode == "linux" and self.state == "login":
            self.send("\r\nUbuntu 22.04.4 LTS myd-lr3576 ttyFIQ0\r\n\r\nmyd-lr3576 login: ")
        while not self._stop.is_set():
            if self.mode == "garbage":  # a 1500000-baud U-Boot read at 115200
                self.send(bytes(random.choice([0x00, 0x80, 0xfe, 0xff, 0x1f, 0xe0, 0x78]) for _ in range(64)))
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.received += data
            if self.mode != "linux" and self.mode != "uboot":
                continue  # silent or garbage: deaf
            for byte in data:
                if byte in (0x0d, 0x0a):
                    line, self._line = self._line.decode(errors="replace"), b""
                    self._on_line(line)
                elif byte == 0x03:
                    self._line = b""
                    self.send("^C\r\n" + self.prompt)
                else:
                    self._line += bytes([byte])

    def _on_line(self, line: str) -> None:
        if self.mode == "uboot":
            self.send("\r\n=> ")
        elif self.state == "login":
            self.send(line + "\r\n")
            if line:
                self.user, self.state = line, "password"
                self.send("Password: ")
            else:
                self.send("myd-lr3576 login: ")
        elif self.state == "password":
            if self.echo_password:
                self.send(line)
            self.send("\r\n")
            if self.user == "root" and line == self.password:
                self.state = "shell"
                self.send("Welcome to Ubuntu 22.04.4 LTS (GNU/Linux 6.1.75 aarch64)\r\n\r\n"
                          "Last login: Thu Oct 10 09:15:02 2024 from 192.168.1.20\r\n" + self.prompt)
            else:
                time.sleep(self.login_delay)  # login(1) waits before it says so
                self.state = "login"
                self.send("Login incorrect\r\nmyd-lr3576 login: ")
        elif self.state == "sudo":
            self.state = "shell"
            status = 0 if line == self.password else 1
            self.send(f"\r\n{self.sudo_marker} {status}\r\n{self.prompt}")
        else:
            self.send(line + "\r\n\x1b[?2004l\r")  # echo, then bash leaves bracketed paste
            self._shell(line)

    def _shell(self, line: str) -> None:
        match = FRAMED.match(line)
        sudo = SUDO.match(line)
        if sudo:  # sudo -v asks for the password with the prompt given by -p
            self.state, self.sudo_marker = "sudo", sudo.group(3) + sudo.group(4)
            self.send(sudo.group(1) + sudo.group(2))
            return
        if line == "exit":
            self.state = "login"
            self.send("logout\r\n\r\nmyd-lr3576 login: ")
            return
        if not match:
            self.send(self.prompt)
            return
        marker, command = match.group(1) + match.group(2), match.group(3)
        self.ran.append(command)
        output, status = self.commands.get(command, (b"", 0))
        output = output.replace(b"\n", b"\r\n")
        if self.inject_kmsg and output:
            # A printk lands in the middle of a line, as on a shared console.
            cut = len(output) // 2
            output = output[:cut] + b"[   12.345678] rockchip-dmc dmc: failed to get vop bandwidth\r\n" + output[cut:]
        self.send(marker.encode() + b"\r\n" + output + f"{marker} {status}\r\n".encode() + self.prompt.encode())


def test_login_and_commands_through_bash_noise():
    with FakeBoard() as board, Console(board.path, secrets=[PASSWORD]) as console:
        console.login("root", PASSWORD, timeout=10)
        assert board.ran[-1].startswith("dmesg -n 1")
        assert console.run("cat /sys/kernel/debug/rknpu/version") == ("RKNPU driver: v0.9.8", 0)
        assert console.run("false") == ("", 1)


def test_busybox_prompt_with_cursor_query():
    with FakeBoard(prompt=ASH_PROMPT) as board, Console(board.path) as console:
        console.login("root", PASSWORD, timeout=10)
        assert console.run("cat /sys/kernel/debug/rknpu/version")[0] == "RKNPU driver: v0.9.8"


def test_shell_already_open_needs_no_login():
    with FakeBoard(start="shell") as board, Console(board.path) as console:
        assert console.detect_state(3) is BoardState.SHELL
        console.login("root", None, timeout=10)
        assert "Password" not in board.received.decode(errors="replace")
        assert console.run("false")[1] == 1


def test_sudo_validate_answers_the_prompt_and_detects_refusal():
    with FakeBoard(start="shell") as board, Console(board.path, secrets=[PASSWORD]) as console:
        console.sudo_validate(PASSWORD, timeout=5)
        with pytest.raises(LoginFailed, match="sudo"):
            console.sudo_validate("wrong-sudo-pw", timeout=5)
        with pytest.raises(LoginFailed, match="none was given"):
            console.sudo_validate(None, timeout=5)


def test_kernel_message_inside_output_is_cut_out():
    commands = {"cat /sys/kernel/debug/rknpu/version": (b"RKNPU driver: v0.9.8\nsecond line\n", 0)}
    with FakeBoard(start="shell", inject_kmsg=True, commands=commands) as board, Console(board.path) as console:
        assert console.run("cat /sys/kernel/debug/rknpu/version") == ("RKNPU driver: v0.9.8\nsecond line", 0)


def test_undecodable_bytes_are_replaced_not_fatal():
    with FakeBoard(start="shell", commands={"cat blob": (b"ok \xff\xfe\xc3 end\n", 3)}) as board, \
            Console(board.path) as console:
        output, status = console.run("cat blob")
        assert status == 3 and output.startswith("ok ") and output.endswith(" end") and "\ufffd" in output


def test_login_incorrect_is_reported_at_once():
    with FakeBoard(login_delay=0.5) as board, Console(board.path) as console:
        started = time.monotonic()
        with pytest.raises(LoginFailed) as info:
            console.login("root", "not-the-password", timeout=120)
    assert time.monotonic() - started < 30  # far from the 120 s timeout
    assert "Login incorrect" in str(info.value) and "not-the-password" not in str(info.value)
    assert info.value.exit_code == 2


def test_password_asked_but_none_given():
    with FakeBoard() as board, Console(board.path) as console:
        with pytest.raises(LoginFailed, match="RK3576_CONSOLE_PASSWORD"):
            console.login("root", None, timeout=10)


def test_garbage_from_wrong_baud_rate_names_the_baud():
    with FakeBoard(mode="garbage") as board, Console(board.path) as console:
        started = time.monotonic()
        with pytest.raises(ConsoleError, match=r"baud rate \(115200\)") as info:
            console.login("root", PASSWORD, timeout=2)
    assert time.monotonic() - started < 6
    assert board.path in str(info.value)


def test_silent_console_fails_clearly_within_timeout():
    with FakeBoard(mode="silent") as board, Console(board.path) as console:
        started = time.monotonic()
        with pytest.raises(ConsoleError, match="no answer from the serial console") as info:
            console.login("root", PASSWORD, timeout=2)
        assert console.detect_state(0.5) is BoardState.UNKNOWN
    assert time.monotonic() - started < 6
    assert "cable" in str(info.value) and board.path in str(info.value)
    assert board.received.count(b"\n") >= 1  # it did try to wake the console


def test_uboot_prompt_says_what_to_type():
    with FakeBoard(mode="uboot") as board, Console(board.path) as console:
        assert console.detect_state(2) is BoardState.UBOOT
        with pytest.raises(ConsoleError, match="U-Boot.*`boot`"):
            console.login("root", PASSWORD, timeout=10)


def test_detect_login_prompt():
    with FakeBoard() as board, Console(board.path) as console:
        assert console.detect_state(3) is BoardState.LOGIN_PROMPT


def test_transcript_masks_an_echoed_password(tmp_path):
    transcript = tmp_path / "t.log"
    with FakeBoard(echo_password=True) as board, Console(board.path, transcript=transcript) as console:
        console.login("root", PASSWORD, timeout=10)
        console.run("false")
    text = transcript.read_text()
    assert PASSWORD not in text and MASK in text and "Last login:" in text


def test_busy_port_names_the_other_program(tmp_path):
    with FakeBoard() as board, Console(board.path):
        with pytest.raises(ConsoleError, match="busy: another program") as info:
            Console(board.path).open()
        assert board.path in str(info.value)


def test_port_locked_by_other_program(tmp_path):
    with FakeBoard() as board:
        holder = os.open(board.path, os.O_RDWR | os.O_NOCTTY)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what picocom/minicom do
        try:
            with pytest.raises(ConsoleError, match="screen/minicom"):
                Console(board.path).open()
        finally:
            os.close(holder)


def test_missing_device():
    with pytest.raises(ConsoleError, match="does not exist.*USB debug cable") as info:
        Console("/dev/ttyUSB-rk3576-absent").open()
    assert info.value.exit_code == 2


def test_refused_network_console():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConsoleError, match="unreachable"):
        Console(f"socket://127.0.0.1:{port}").open()


@pytest.mark.parametrize("text, state", [
    ("\r\nmyd-lr3576 login: ", BoardState.LOGIN_PROMPT),
    ("myd-lr3576 login: [    5.123456] random: crng init done\r\n", BoardState.LOGIN_PROMPT),
    ("Last login: Thu Oct 10 09:15:02 2024 from 192.168.1.20\r\n", BoardState.BOOTING),
    ("Last login:", BoardState.BOOTING),
    ("Password: ", BoardState.PASSWORD_PROMPT),
    ("\x1b[?2004hroot@myd-lr3576:~# ", BoardState.SHELL),
    ("user@myd:~$ \x1b[6n", BoardState.SHELL),
    ("Hit any key to stop autoboot:  0 \r\n=> ", BoardState.UBOOT),
    ("[    0.000000] Linux version 6.1.75 (gcc) #", BoardState.UNKNOWN),
    ("", BoardState.UNKNOWN),
])
def test_classify(text, state):
    assert classify(text) is state


def test_strip_helpers():
    assert strip_terminal("\x1b[?2004hroot# \x1b[6n\x1b[1;32mok\x1b[0m") == "root# ok"
    assert strip_kernel_messages("RKNPU dri[   1.000000] x: y\r\nver: v0.9.8\r\n") == "RKNPU driver: v0.9.8\r\n"


def test_interactive_program_expect_send_line_and_timeout():
    user, robot = re.compile(r"(?:^|\n)user: "), re.compile(r"robot: ")
    with FakeBoard(start="shell") as board, Console(board.path) as console:
        console.start("llm_demo model.rkllm 64 512")
        board.send("rkllm init start\r\n[    3.141592] rknpu: a kernel line\r\nrkllm init success\r\n\r\nuser: ")
        index, _ = console.expect([robot, user], timeout=5, what="the prompt")
        assert index == 1
        console.send_line("hello")
        board.send("robot: Hi there.\r\n\r\nuser: ")
        console.expect([robot], timeout=5, what="robot")
        index, _ = console.expect([user], timeout=5, what="the next prompt")  # the first prompt is behind us
        text = console.session_text()
        assert "rknpu: a kernel line" not in text and "\r" not in text
        assert "rkllm init success\n" in text and "robot: Hi there." in text
        wait_until(lambda: b"hello\n" in board.received, "the line the board was sent", timeout=5)
        with pytest.raises(ConsoleTimeout, match="no answer on .* within 1 s") as info:
            console.expect([robot], timeout=1, what="answer")
        # What came meanwhile (the shell's echo and prompt, on a loaded machine) is reported, never a match.
        assert info.value.exit_code == 2 and "robot" not in info.value.seen


def test_recover_shell_after_a_hang_and_on_a_deaf_line():
    with FakeBoard(start="shell") as board, Console(board.path) as console:
        console.start("sleep 600")
        assert console.recover_shell(timeout=10)
        assert "\x03" in board.received.decode()
        assert console.run("false") == ("", 1)  # the shell is usable again
    with FakeBoard(mode="silent") as board, Console(board.path) as console:
        started = time.monotonic()
        assert not console.recover_shell(timeout=2)
        assert time.monotonic() - started < 10

