"""A real loopback HTTP server for tests, with the misbehaviours downloads must survive.

Per path it can honour or ignore Range (and If-Range against its ETag or Last-Modified),
drop the connection after N bytes (for the first K requests), stall or trickle mid-body,
serve wrong bytes, answer with an error status (always or for the first K requests),
require basic auth; it records every request (path and the headers downloads send).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """How one path is served."""

    body: bytes
    honour_range: bool = True
    drop_after: int | None = None     # close the socket after this many body bytes ...
    drop_times: int = 0               # ... for this many requests (then serve normally)
    status: int = 200                 # e.g. 404 to make a source fail
    corrupt_at: int | None = None     # serve wrong bytes: flip the byte at this offset
    auth: tuple[str, str] | None = None
    fail_times: int = 0               # answer `fail_status` to this many requests first
    fail_status: int = 503
    etag: bool = True                 # send a strong ETag (from the body) ...
    last_modified: str | None = None  # ... and/or this Last-Modified date
    stall_after: int | None = None    # send this many body bytes, then nothing for `stall_for` s
    stall_for: float = 0.0
    trickle: tuple[int, float] | None = None   # (bytes, seconds): send the body this slowly

    def tag(self) -> str | None:
        return f'"{hashlib.sha256(self.body).hexdigest()[:16]}"' if self.etag else None

    def validators(self) -> set[str]:
        return {v for v in (self.tag(), self.last_modified) if v}


@dataclass
class Request:
    path: str
    range: str | None
    authorization: str | None
    if_range: str | None = None
    if_none_match: str | None = None


@dataclass
class LoopbackServer:
    """`with LoopbackServer() as srv: srv.add('/f', data); srv.url('/f')`."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes, **options) -> Route:
        route = Route(body=body, **options)
        self.routes[path] = route
        return route

    def count(self, path: str) -> int:
        """How many requests reached `path`."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def ranges(self, path: str) -> list[str | None]:
        with self._lock:
            return [r.range for r in self.requests if r.path == path]

    def sent(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _handler_for(server: LoopbackServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            server._record(Request(self.path, self.headers.get("Range"),
                                   self.headers.get("Authorization"), self.headers.get("If-Range"),
                                   self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since")))
            route = server.routes.get(self.path)
            if route is None:
                return self._plain(404, b"not found")
            if route.auth is not None:
                token = base64.b64encode(f"{route.auth[0]}:{route.auth[1]}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    return self._plain(401, b"unauthorized")
            if route.status != 200:
                return self._plain(route.status, b"error")
            if route.fail_times > 0:
                route.fail_times -= 1
                return self._plain(route.fail_status, b"try later")
            conditional = self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since")
            if conditional and conditional in route.validators():
                return self._plain(304, b"")
            body, start = route.body, 0
            if route.corrupt_at is not None:
                flipped = bytearray(body)
                flipped[route.corrupt_at] ^= 0xFF
                body = bytes(flipped)
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range not in route.validators():
                wanted = None         # the file changed since: send it whole
            if wanted and route.honour_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "application/octet-stream")
            if route.tag():
                self.send_header("ETag", route.tag())
            if route.last_modified:
                self.send_header("Last-Modified", route.last_modified)
            self.end_headers()
            if route.stall_after is not None or route.trickle is not None:
                try:
                    self._slowly(route, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass              # the client gave up, as it should
                self.close_connection = True
                return
            if route.drop_after is not None and route.drop_times > 0:
                route.drop_times -= 1
                self.wfile.write(payload[:route.drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)   # a dropped connection, mid-body
                return
            self.wfile.write(payload)

        def _slowly(self, route: Route, payload: bytes) -> None:
            if route.stall_after is not None:
                self.wfile.write(payload[:route.stall_after])
                self.wfile.flush()
                time.sleep(route.stall_for)
                payload = payload[route.stall_after:]
            step, pause = route.trickle or (len(payload) or 1, 0.0)
            for offset in range(0, len(payload), step):
                self.wfile.write(payload[offset:offset + step])
                self.wfile.flush()
                time.sleep(pause)

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            if status != 304:
                self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if status != 304:
                self.wfile.write(text)

    return Handler
