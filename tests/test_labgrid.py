"""verify --place through a real labgrid coordinator, exporter and ser2net, on loopback.

The rack: the QEMU virtual board's pty console, published by ser2net as RFC 2217,
exported by labgrid-exporter as a NetworkSerialPort, plus a NetworkPowerPort whose
`rest` model is a loopback HTTP power switch of these tests that boots and stops
the board. Places are made with labgrid-client; verify runs as the real CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import BOARD_PASSWORD, REPO
from rk3576_build.board.labgrid_place import PlaceError, console_url
from rk3576_build.demo.vboard import VirtualBoard

PLACE = "rk3576-vb"
OTHER_USER = "someone-else"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ser2net() -> str:
    return shutil.which("ser2net") or "/usr/sbin/ser2net"


class Process:
    """A background process whose output lands in a log file; stop() always ends it."""

    def __init__(self, cmd: list[str], log: Path, **kwargs):
        self.log = log
        self._out = open(log, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env=env, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]


def _wait(predicate, what: str, timeout: float = 30, proc: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited: {proc.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s" + (f": {proc.tail()}" if proc else ""))
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Lab:
    """A labgrid coordinator on loopback and the labgrid-client calls the tests make."""

    def __init__(self, root: Path, stack: contextlib.ExitStack):
        self.root = root
        self.stack = stack
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        coordinator = self.start(["labgrid-coordinator", "-l", self.address], "coordinator")
        _wait(lambda: _listening(port), "labgrid-coordinator listening", proc=coordinator)

    def start(self, cmd: list[str], name: str) -> Process:
        proc = Process(cmd, self.root / f"{name}.log", cwd=self.root)
        self.stack.callback(proc.stop)
        return proc

    def client(self, *args: str, user: str | None = None, check: bool = True) -> str:
        env = {**os.environ, "LG_COORDINATOR": self.address}
        if user:
            env["LG_USERNAME"] = user
        result = subprocess.run(["labgrid-client", *args], capture_output=True, text=True, env=env,
                                timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"labgrid-client {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout + result.stderr

    def exporter(self, name: str, config: str) -> Process:
        """A labgrid-exporter called `name`, once the coordinator lists its resources."""
        path = self.root / f"exporter-{name}.yaml"
        path.write_text(config)
        proc = self.start(["labgrid-exporter", "-c", self.address, "-n", name, "--hostname", "127.0.0.1",
                           str(path)], f"exporter-{name}")
        _wait(lambda: f"{name}/" in self.client("resources"), f"exporter {name}'s resources", proc=proc)
        return proc

    def place(self, name: str, *matches: str) -> None:
        self.client("-p", name, "create")
        for match in matches:
            self.client("-p", name, "add-match", match)

    def holder(self, place: str) -> str:
        """Who holds `place` ("None": nobody), as labgrid-client shows it."""
        for line in self.client("-p", place, "show").splitlines():
            if line.strip().startswith("acquired:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no acquired: line for {place}")


class PowerSwitch:
    """A loopback network power switch (labgrid's `rest` model: GET/PUT /relay/<index>, "0"/"1").

    Relay 0 powers the QEMU board: on boots it with `image` (its pty behind the
    stable `link` that ser2net opens), off stops it.
    """

    def __init__(self, image, root: Path):
        self.image = image
        self.root = root
        self.link = root / "board-console"
        self.events: list[str] = []
        self.boots = 0
        self.hold_answers = threading.Event()  # set: PUT answers wait until it is cleared
        self.board: VirtualBoard | None = None
        self._lock = threading.Lock()
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(b"1" if switch.board is not None else b"0")

            def do_PUT(self):
                value = self.rfile.read(int(self.headers.get("Content-Length") or 0)).strip()
                if self.path != "/relay/0" or value not in (b"0", b"1"):
                    self.send_error(404)
                    return
                switch.power(value == b"1")
                while switch.hold_answers.is_set():
                    time.sleep(0.05)
                self._answer(value)

            def _answer(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/relay/{{index}}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        # QEMU dies with the thread that started it (PR_SET_PDEATHSIG), and an HTTP
        # handler's thread ends with its request: one long-lived thread switches the board.
        self._requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._switch_forever, daemon=True).start()

    def _switch_forever(self) -> None:
        while True:
            on, done = self._requests.get()
            try:
                self._switch(on)
            finally:
                done.set()

    def power(self, on: bool) -> None:
        done = threading.Event()
        self._requests.put((on, done))
        done.wait()

    def _switch(self, on: bool) -> None:
        with self._lock:
            self.events.append("on" if on else "off")
            if on and self.board is None:
                self.boots += 1
                self.board = VirtualBoard(self.image, serial="pty",
                                          log_path=self.root / f"qemu-{self.boots}.log").start()
                tmp = self.link.with_name(self.link.name + ".new")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(self.board.url)
                os.replace(tmp, self.link)
            elif not on and self.board is not None:
                self.link.unlink(missing_ok=True)  # the pty number may soon belong to someone else
                self.board.stop()
                self.board = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.power(False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield Lab(tmp_path_factory.mktemp("labgrid"), stack)


@pytest.fixture(scope="module")
def rack(lab, board_images):
    """Exporter `rack1`: the booted board's console (ser2net, RFC 2217) and its power switch; place PLACE."""
    switch = PowerSwitch(board_images("0.9.8"), lab.root)
    lab.stack.callback(switch.close)
    switch.power(True)
    port = _free_port()
    config = lab.root / "ser2net.yaml"
    config.write_text(f"""connection: &board
  accepter: telnet(rfc2217,mode=server),tcp,127.0.0.1,{port}
  connector: serialdev(nouucplock=true),{switch.link},115200n81,local
  options:
    max-connections: 1
""")
    ser2net = lab.start([_ser2net(), "-n", "-d", "-c", str(config)], "ser2net")
    _wait(lambda: _listening(port), "ser2net listening", proc=ser2net)
    lab.exporter("rack1", f"""board:
  NetworkSerialPort:
    host: 127.0.0.1
    port: {port}
    speed: 115200
    protocol: rfc2217
  NetworkPowerPort:
    model: rest
    host: '{switch.url}'
    index: 0
""")
    lab.place(PLACE, "rack1/board/*")
    return switch


def verify(lab: Lab, tmp_path: Path, *args: str, env: dict | None = None,
           popen: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    """`rk3576-build verify ARGS` through the real CLI, the coordinator from LG_COORDINATOR."""
    cmd = [sys.executable, "-m", "rk3576_build.cli", "verify", "--out", str(tmp_path / "out"),
           "--login-timeout", "90", *args]
    env = {**os.environ, "LG_COORDINATOR": lab.address, "RK3576_CONSOLE_PASSWORD": BOARD_PASSWORD,
           **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_console_urls_for_ser2net_ports():
    assert console_url("rfc2217", "lab-pc", 3001) == "rfc2217://lab-pc:3001?ign_set_control"
    assert console_url("raw", "10.0.0.5", 3002) == "socket://10.0.0.5:3002"
    assert console_url("raw", "fd00::5", 3002) == "socket://[fd00::5]:3002"
    with pytest.raises(PlaceError, match="speaks 'telnet'.*rfc2217 or raw"):
        console_url("telnet", "lab-pc", 23)


def test_without_labgrid_a_place_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['labgrid'] = None\n"
            "from rk3576_build.cli.verify import main; sys.exit(main(sys.argv[1:]))")
    for args, expected in ((["--place", "rack-3"], "pip install 'rk3576-build[labgrid]'"),
                           (["--console", "socket://127.0.0.1:9", "--power-cycle"],
                            "--power-cycle needs a labgrid place")):
        result = subprocess.run([sys.executable, "-c", code, *args, "--out", str(tmp_path)], capture_output=True,
                                text=True, env={**os.environ, "RK3576_CONSOLE_PASSWORD": "x"}, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert not (tmp_path / "verify-report.json").exists()


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "verify-report.json").read_text())


@pytest.mark.labgrid
@pytest.mark.qemu
def test_verify_through_a_place_reads_the_driver_and_releases_the_place(lab, rack, tmp_path):
    rack.power(True)
    result = verify(lab, tmp_path, "--place", PLACE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rk3576-build verify: PASS" in result.stdout
    assert "actual    RKNPU driver: v0.9.8" in result.stdout
    assert f"acquired labgrid place {PLACE} at {lab.address}" in result.stderr
    assert f"released labgrid place {PLACE}" in result.stderr
    report = _report(tmp_path)
    assert report["console"].startswith("rfc2217://127.0.0.1:") and report["actual"] == "RKNPU driver: v0.9.8"
    assert lab.holder(PLACE) == "None"
    assert BOARD_PASSWORD not in result.stdout + result.stderr


@pytest.mark.labgrid
@pytest.mark.qemu
def test_the_recipe_names_the_place(lab, rack, tmp_path):
    text = (REPO / "recipes" / "demo.yaml").read_text()
    assert "\nverify:\n" in text
    recipe = tmp_path / "lab.yaml"
    recipe.write_text(text.replace("\nverify:\n", f"\nverify:\n  place: {PLACE}\n"))
    rack.power(True)
    # The rack's board boots the stand-in image, which carries no multimodal demo app (the demo
    # recipe builds one into its own image): this test is about where the console comes from.
    result = verify(lab, tmp_path, "--recipe", str(recipe), "--workdir", str(tmp_path / "work"), "--no-multimodal")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"acquired labgrid place {PLACE}" in result.stderr
    assert _report(tmp_path)["console"].startswith("rfc2217://127.0.0.1:")  # not the recipe's console


@pytest.mark.labgrid
@pytest.mark.qemu
def test_an_exporter_that_starts_ser2net_for_a_local_port(lab, rack, tmp_path):
    """As for a USBSerialPort on a lab PC: the exporter runs ser2net once the place is acquired."""
    rack.power(True)
    lab.exporter("bench-pc", f"""board:
  RawSerialPort:
    port: {rack.board.url}
    speed: 115200
""")
    lab.place("rk3576-raw", "bench-pc/board/*")
    result = verify(lab, tmp_path, "--place", "rk3576-raw")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "actual    RKNPU driver: v0.9.8" in result.stdout
    assert _report(tmp_path)["console"].startswith("rfc2217://127.0.0.1:")
    assert lab.holder("rk3576-raw") == "None"


@pytest.mark.labgrid
@pytest.mark.qemu
def test_a_place_the_caller_already_holds_is_used_and_stays_held(lab, rack, tmp_path):
    rack.power(True)
    lab.client("-p", PLACE, "acquire")
    try:
        result = verify(lab, tmp_path, "--place", PLACE, "--coordinator", lab.address,
                        env={"LG_COORDINATOR": "127.0.0.1:1"})  # the option wins over the variable
        assert result.returncode == 0, result.stdout + result.stderr
        assert "acquired" not in result.stderr and "released" not in result.stderr
        assert lab.holder(PLACE) not in ("None", "")
    finally:
        lab.client("-p", PLACE, "release")


@pytest.mark.labgrid
@pytest.mark.qemu
def test_a_place_held_by_another_user_exits_2_and_stays_theirs(lab, rack, tmp_path):
    lab.client("-p", PLACE, "acquire", user=OTHER_USER)
    try:
        result = verify(lab, tmp_path, "--place", PLACE)
        assert result.returncode == 2, result.stdout + result.stderr
        message = result.stderr.strip()
        assert message.count("\n") == 0 and "Traceback" not in message
        assert f"labgrid place {PLACE} is held by" in message and OTHER_USER in message
        assert lab.holder(PLACE).endswith("/" + OTHER_USER)
    finally:
        lab.client("-p", PLACE, "release", user=OTHER_USER)


@pytest.mark.labgrid
@pytest.mark.qemu
def test_power_cycle_switches_the_board_off_and_on_before_the_login(lab, rack, tmp_path):
    rack.power(False)  # a board left off: only the power cycle can bring it back
    events, boots = len(rack.events), rack.boots
    result = verify(lab, tmp_path, "--place", PLACE, "--power-cycle")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rack.events[events:] == ["off", "on"] and rack.boots == boots + 1
    assert f"power-cycling labgrid place {PLACE} (rest at http://127.0.0.1:" in result.stderr
    assert "actual    RKNPU driver: v0.9.8" in result.stdout
    assert lab.holder(PLACE) == "None"


@pytest.mark.labgrid
@pytest.mark.qemu
def test_a_board_with_the_wrong_driver_fails_with_exit_1_and_the_place_is_released(lab, rack, board_images,
                                                                                   tmp_path):
    rack.image = board_images("0.9.6")  # the rack's board got an older build: the next power-on boots it
    try:
        result = verify(lab, tmp_path, "--place", PLACE, "--power-cycle")
    finally:
        rack.image = board_images("0.9.8")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rk3576-build verify: FAIL" in result.stdout
    assert _report(tmp_path)["actual"] == "RKNPU driver: v0.9.6"
    assert f"released labgrid place {PLACE}" in result.stderr
    assert lab.holder(PLACE) == "None"


@pytest.mark.labgrid
@pytest.mark.qemu
def test_sigterm_releases_the_place(lab, rack, tmp_path):
    events = len(rack.events)
    rack.hold_answers.set()  # verify waits for the switch's answer to "off": stop it in there
    proc = verify(lab, tmp_path, "--place", PLACE, "--power-cycle", popen=True)
    try:
        _wait(lambda: "off" in rack.events[events:] or proc.poll() is not None, "the power cycle's off")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        rack.hold_answers.clear()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "stopped by SIGTERM" in err and f"released labgrid place {PLACE}" in err
    assert "Traceback" not in err
    assert lab.holder(PLACE) == "None" and rack.events[events:] == ["off"]  # left off, as a real switch


@pytest.mark.labgrid
def test_place_problems_exit_2_with_one_clear_line(lab, tmp_path):
    lab.exporter("psu", """mains:
  NetworkPowerPort:
    model: rest
    host: 'http://127.0.0.1:9/relay/{index}'
    index: 0
""")
    lab.exporter("bench", f"""console:
  NetworkSerialPort:
    host: 127.0.0.1
    port: {_free_port()}
    speed: 115200
""")
    lab.place("power-only", "psu/mains/*")
    lab.place("serial-only", "bench/console/*")
    cases = {
        ("--place", "no-such-place"): "labgrid place 'no-such-place' is unknown",
        ("--place", "power-only"): "has no serial console (NetworkSerialPort)",
        ("--place", "serial-only", "--power-cycle"): "has no power switch (NetworkPowerPort)",
        ("--place", "serial-only", "--coordinator", "127.0.0.1:1"):
            "cannot reach the labgrid coordinator at 127.0.0.1:1",
    }
    for args, expected in cases.items():
        result = verify(lab, tmp_path, *args)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("rk3576-build: error:")]
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert lab.holder("power-only") == lab.holder("serial-only") == "None"


@pytest.mark.labgrid
def test_a_place_whose_exporter_is_gone_exits_2(lab, tmp_path):
    exporter = lab.exporter("gone", f"""console:
  NetworkSerialPort:
    host: 127.0.0.1
    port: {_free_port()}
    speed: 115200
""")
    lab.place("orphan", "gone/console/*")
    exporter.stop()
    _wait(lambda: "gone/" not in lab.client("resources"), "the stopped exporter's resources to vanish")
    result = verify(lab, tmp_path, "--place", "orphan")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "labgrid place orphan cannot be acquired" in result.stderr
    assert "is its exporter running" in result.stderr and "Traceback" not in result.stderr
    assert lab.holder("orphan") == "None"
