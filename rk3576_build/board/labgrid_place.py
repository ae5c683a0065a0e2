"""A board behind a labgrid coordinator: hold its place, give its console URL, power-cycle it.

The only module that imports labgrid (an optional extra: `pip install rk3576-build[labgrid]`).
`hold(name)` acquires the place through labgrid's client session (or uses it when this
user already holds it), turns its NetworkSerialPort (ser2net on an exporter) into a URL
the console layer speaks (`rfc2217://host:port` or `socket://host:port`), optionally
switches its NetworkPowerPort off and on through labgrid's NetworkPowerDriver, and
releases the place when the with-block ends, fails or is stopped by a signal.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rk3576_build.core import logs, signals
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import redact_url

_log = logs.get(__name__)

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default
SERIAL_READY_TIMEOUT = 20.0  # seconds for an exporter to start ser2net after the acquire
_SCHEMES = {"rfc2217": "rfc2217", "raw": "socket"}


class PlaceError(UserError):
    """The place cannot be used (unknown, held by someone else, no console, no coordinator): exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class PlaceConsole:
    """The console of a held place."""

    place: str
    url: str
    baud: int
    acquired_here: bool  # False: the caller already held the place (it stays held)


def coordinator_address(option: str | None = None) -> str:
    """The coordinator: the option, else labgrid's LG_COORDINATOR, else labgrid's default."""
    return option or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def console_url(protocol: str, host: str, port: int) -> str:
    """The pyserial URL of a NetworkSerialPort (ser2net: rfc2217 or raw TCP).

    ser2net does not answer RFC 2217 SET_CONTROL the way pyserial waits for, so
    rfc2217 URLs carry `ign_set_control` (as labgrid's own SerialDriver does).
    """
    scheme = _SCHEMES.get(protocol)
    if scheme is None:
        raise PlaceError(f"the place's serial port speaks {protocol!r}, which rk3576-build cannot "
                         f"use: export it as rfc2217 or raw")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" + ("?ign_set_control" if scheme == "rfc2217" else "")


def _labgrid():
    """labgrid's client pieces, or a PlaceError saying how to install them."""
    try:  # lazy: labgrid is an optional extra, imported only for a place
        import grpc
        from labgrid import Target, target_factory
        from labgrid.remote import client
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2
        from labgrid.util.proxy import proxymanager
    except ImportError as exc:
        raise PlaceError(f"--place needs labgrid, which is not installed ({exc.name or exc}): "
                         "pip install 'rk3576-build[labgrid]' (or: pip install 'labgrid>=26')") from None
    return grpc, Target, target_factory, client, pb2, proxymanager


class _CoordinatorLog(logging.Handler):
    """Keeps labgrid's root-logger complaints (coordinator unavailable) off stderr, for our message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_labgrid_log() -> Iterator[_CoordinatorLog]:
    root = logging.getLogger()
    handler = _CoordinatorLog()
    root.addHandler(handler)  # also stops logging.error() from installing a stderr handler
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _stop(signum: int, _frame: object) -> None:
    """A stop signal inside a held place: a PlaceError (exit 128 + the signal), so the place is still released."""
    error = PlaceError(f"stopped by {signal.Signals(signum).name}")
    error.exit_code = 128 + signum
    raise error


class _Session:
    """One labgrid ClientSession to the coordinator and what this tool does with it."""

    def __init__(self, address: str, log: _CoordinatorLog):
        (self.grpc, self.Target, self.factory, self.client, self.pb2, self.proxy) = _labgrid()
        self.address = address
        try:
            self.session = self.client.start_session(address)
        except (self.client.Error, OSError, ValueError) as exc:
            detail = log.messages[-1] if log.messages else str(exc)
            raise PlaceError(f"cannot reach the labgrid coordinator at {address} ({detail}): start "
                             "labgrid-coordinator there, or pass --coordinator HOST:PORT "
                             "(or set LG_COORDINATOR)") from None
        self.loop = self.session.loop
        self.me = f"{self.session.gethostname()}/{self.session.getuser()}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.session.stop())
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.session.close())

    def _call(self, coroutine, what: str):
        try:
            result = self.loop.run_until_complete(coroutine)
            self.loop.run_until_complete(self.session.sync_with_coordinator())
            return result
        except self.grpc.aio.AioRpcError as exc:
            raise PlaceError(f"{what}: {exc.details()}") from None

    def place(self, name: str):
        """The place called (or matching) `name`, as labgrid-client -p finds it."""
        try:
            return self.session.get_place(name)
        except self.client.Error as exc:
            known = ", ".join(sorted(self.session.places)) or "none"
            raise PlaceError(f"labgrid place {name!r} is unknown at {self.address} "
                             f"({' '.join(map(str, exc.args))}; places: {known}): "
                             f"create it (labgrid-client -p {name} create) or check --place") from None

    def holds(self, place) -> bool:
        """May this user work on `place` (acquired by it, or allowed in by its holder)?"""
        return place.acquired == self.me or self.me in place.allowed

    def holds_now(self, place) -> bool:
        """Did our acquire go through (even one a signal interrupted)? Asks the coordinator."""
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.session.sync_with_coordinator())
        return place.acquired == self.me

    def acquire(self, place) -> None:
        if place.acquired:
            raise PlaceError(f"labgrid place {place.name} is held by {place.acquired}: wait until it "
                             f"is released (labgrid-client -p {place.name} show), or ask them to release it")
        try:
            self.session.check_matches(place)
        except self.client.Error as exc:
            raise PlaceError(f"labgrid place {place.name} cannot be acquired: {' '.join(map(str, exc.args))} "
                             "(is its exporter running and connected to the coordinator?)") from None
        request = self.pb2.AcquirePlaceRequest(placename=place.name)
        self._call(self.session.stub.AcquirePlace(request), f"acquiring labgrid place {place.name} failed")

    def release(self, place) -> None:
        request = self.pb2.ReleasePlaceRequest(placename=place.name)
        self._call(self.session.stub.ReleasePlace(request), f"releasing labgrid place {place.name} failed")

    def resources(self, place) -> dict:
        """(name, cls) -> labgrid resource entry, for what the held place acquired."""
        try:
            return self.session.get_target_resources(place)
        except self.client.Error as exc:
            raise PlaceError(f"labgrid place {place.name}: {' '.join(map(str, exc.args))}") from None

    def wait_serial(self, place, timeout: float):
        """The place's NetworkSerialPort entry once its exporter serves it (ser2net started)."""
        deadline = time.monotonic() + timeout
        while True:
            serial = [entry for (_, cls), entry in self.resources(place).items() if cls == "NetworkSerialPort"]
            if not serial:
                raise PlaceError(f"labgrid place {place.name} has no serial console (NetworkSerialPort): "
                                 f"add one (labgrid-client -p {place.name} add-match EXPORTER/GROUP/"
                                 "NetworkSerialPort), exported from a USBSerialPort or RawSerialPort")
            entry = serial[0]
            if entry.avail and entry.args.get("port"):
                return entry
            if time.monotonic() >= deadline:
                raise PlaceError(f"the serial console of labgrid place {place.name} is not available "
                                 f"after {timeout:.0f} s (is the adapter plugged into the exporter, and "
                                 "ser2net installed there?)")
            import asyncio  # lazy: only a place needs it (labgrid's loop); keeps verify without one fast

            self.loop.run_until_complete(asyncio.sleep(0.2))

    def target(self, place, entries: dict):
        """A labgrid Target holding the place's resources (as labgrid's RemotePlace expands them)."""
        target = self.Target(place.name)
        made = {}
        for (name, cls), entry in entries.items():
            if cls not in ("NetworkSerialPort", "NetworkPowerPort"):
                continue
            resource = self.factory.make_resource(target, cls, name, dict(entry.args))
            resource.extra = entry.extra
            made[cls] = resource
        return target, made


def _power_cycle(place, target, power, echo: Callable[[str], None]) -> None:
    """Switch the place's board off and on through labgrid's NetworkPowerDriver."""
    from labgrid.driver import NetworkPowerDriver  # lazy: labgrid is an optional extra (see _labgrid)

    where = redact_url(power.host)
    echo(f"power-cycling labgrid place {place.name} ({power.model} at {where}, port {power.index})")
    try:
        driver = NetworkPowerDriver(target, name=None)
        target.activate(driver)
        driver.cycle()
    except PlaceError:
        raise  # a signal (see _stop)
    except Exception as exc:  # any backend failure: requests, a bad model name, ...
        detail = str(exc).replace(power.host, where)
        if "@" in detail:
            detail = type(exc).__name__
        raise PlaceError(f"power-cycling labgrid place {place.name} through {where} failed "
                         f"({detail}): check the power switch and the place's NetworkPowerPort") from None
    finally:
        try:
            target.cleanup()
        except Exception:  # a driver left half-made by a signal: nothing to switch back
            atexit.unregister(target._atexit_cleanup)  # else labgrid retries it at exit, with a traceback


@contextlib.contextmanager
def through_place(settings, *, coordinator: str | None = None, power_cycle: bool = False,
                  echo: Callable[[str], None] | None = None):
    """`settings` (verify's VerifySettings) with the console of `settings.place`, held for the block.

    Without a place, `settings` unchanged (and --power-cycle refused: it needs a place).
    """
    if not settings.place:
        if power_cycle:
            raise PlaceError("--power-cycle needs a labgrid place with a power switch: pass --place NAME "
                             "(or set verify.place in the recipe)")
        yield settings
        return
    with hold(settings.place, coordinator=coordinator, power_cycle=power_cycle, echo=echo) as console:
        yield dataclasses.replace(settings, console=console.url, baud=console.baud)


@contextlib.contextmanager
def hold(name: str, *, coordinator: str | None = None, power_cycle: bool = False,
         echo: Callable[[str], None] | None = None) -> Iterator[PlaceConsole]:
    """Hold labgrid place `name` for the with-block; yield its console.

    Acquires the place unless this user already holds it (then it stays held),
    power-cycles it first when asked, and releases what it acquired on the way out,
    whatever happens (SIGTERM and SIGHUP included).
    """
    address = coordinator_address(coordinator)
    echo = echo or _log.info
    with _quiet_labgrid_log() as log, signals.handled(_stop):
        session = _Session(address, log)
        acquiring = False
        place = None
        try:
            place = session.place(name)
            if not session.holds(place):
                acquiring = True
                session.acquire(place)
                echo(f"acquired labgrid place {place.name} at {address}")
            serial = session.wait_serial(place, SERIAL_READY_TIMEOUT)
            target, resources = session.target(place, session.resources(place))
            url = _serial_url(place, resources["NetworkSerialPort"], session.proxy)
            if power_cycle:
                if "NetworkPowerPort" not in resources:
                    raise PlaceError(f"--power-cycle: labgrid place {place.name} has no power switch "
                                     f"(NetworkPowerPort): add one to its exporter and place, or drop "
                                     "--power-cycle")
                _power_cycle(place, target, resources["NetworkPowerPort"], echo)
            yield PlaceConsole(place=place.name, url=url, baud=int(serial.args.get("speed") or 115200),
                               acquired_here=acquiring)
        finally:
            with signals.ignored():
                try:
                    if acquiring and session.holds_now(place):
                        _release(session, place, echo, failing=sys.exc_info()[0] is not None)
                finally:
                    session.close()


def _serial_url(place, serial, proxy) -> str:
    """The console URL of the NetworkSerialPort resource, through labgrid's proxy (LG_PROXY, -i) if any."""
    try:
        host, port = proxy.get_host_and_port(serial)
    except Exception as exc:  # an SSH forward that labgrid could not set up
        raise PlaceError(f"cannot reach the serial console of labgrid place {place.name} on "
                         f"{serial.host} ({exc}): check the exporter host and any LG_PROXY") from None
    return console_url(serial.protocol, host, port)


def _release(session: _Session, place, echo: Callable[[str], None], *, failing: bool) -> None:
    """Release the place; a release error never hides the error that ended the work."""
    try:
        session.release(place)
    except PlaceError as exc:
        if not failing:
            raise
        _log.warning("%s (release it with labgrid-client -p %s release)", exc, place.name)
        return
    echo(f"released labgrid place {place.name}")
