"""fetch(): download cache, resume, checksums, mirrors, offline mode, lock-file pins, local files."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import yaml

from helpers import REPO, wait_until
from http_server import LoopbackServer
from rk3576_build.config.workspace import default_downloads_dir
from rk3576_build.core.errors import UserError
from rk3576_build.core.text import redact, redact_url
from rk3576_build.sources import http as http_mod
from rk3576_build.sources.fetch import cache_path, fetch, settle_after_unpack
from rk3576_build.sources.unpack import unpack

BODY = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(BODY).hexdigest()
NAME = "rknpu_driver_0.9.8_20241009.tar.bz2"
PATH = f"/rknn-llm/raw/main/rknpu-driver/{NAME}"


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def dl(tmp_path):
    return tmp_path / "downloads"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(http_mod, "RETRY_BACKOFF", 0.01)


def slot(dl, url, name=NAME, sha256=None):
    """The cache slot: keyed by the content's sha256 when the fetch knows it, else by the URL."""
    return cache_path(dl, url, name, sha256)


def test_download_is_verified_stamped_and_then_served_from_cache(server, dl):
    server.add(PATH, BODY)
    first = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert first.path == slot(dl, server.url(PATH), sha256=SHA) and first.path.read_bytes() == BODY
    assert (first.sha256, first.size, first.provisional) == (SHA, len(BODY), False)
    assert SHA in (first.path.parent / f"{NAME}.done").read_text()
    assert not (first.path.parent / f"{NAME}.part").exists()

    again = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert again.path == first.path and again.source == server.url(PATH)
    assert server.count(PATH) == 1       # the stamp answered: no network


def test_interrupted_download_resumes_with_range_and_verifies(server, dl):
    server.add(PATH, BODY, drop_after=700_000, drop_times=2)
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl, progress=True)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == [None, "bytes=700000-", "bytes=1400000-"]


def test_download_failing_every_retry_keeps_part_and_next_run_resumes(server, dl):
    server.add(PATH, BODY, drop_after=100_000, drop_times=99)
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    message = str(err.value)
    assert "interrupted" in message and "next run resumes" in message
    part = slot(dl, server.url(PATH), sha256=SHA).with_name(f"{NAME}.part")
    kept = part.stat().st_size
    assert kept == 100_000 * http_mod.MAX_ATTEMPTS

    server.routes[PATH].drop_times = 0        # the network is back
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY and not part.exists()
    assert server.ranges(PATH)[-1] == f"bytes={kept}-"


def test_server_ignoring_range_still_ends_verified(server, dl):
    server.add(PATH, BODY, honour_range=False, drop_after=1000, drop_times=1)
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == [None, "bytes=1000-"]   # asked, got 200, restarted cleanly


@pytest.mark.parametrize("sha", [SHA, None])
def test_part_planted_by_hand_is_never_resumed(server, dl, sha):
    server.add(PATH, BODY)
    part = slot(dl, server.url(PATH), sha256=sha).with_name(f"{NAME}.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[:5000])          # even a true prefix: nothing says where it came from
    result = fetch("driver", server.url(PATH), sha256=sha, downloads_dir=dl)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == [None]


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_part_of_a_file_since_replaced_restarts_from_zero(server, dl, validator):
    """Finding 1: the unpinned SDK changed on the server between two runs."""
    options = {"etag": False, "last_modified": "Wed, 09 Oct 2024 10:00:00 GMT"} \
        if validator == "last-modified" else {}
    route = server.add(PATH, BODY, drop_after=5000, drop_times=99, **options)
    with pytest.raises(UserError, match="next run resumes"):
        fetch("sdk", server.url(PATH), sha256=None, downloads_dir=dl)
    sent = server.sent(PATH)[-1]
    old = route.tag() or route.last_modified
    assert sent.range == "bytes=20000-" and sent.if_range == old    # same file: resumed
    other = os.urandom(len(BODY))                                   # the file was replaced
    route.body, route.drop_times = other, 0
    if route.last_modified:
        route.last_modified = "Thu, 10 Oct 2024 10:00:00 GMT"
    result = fetch("sdk", server.url(PATH), sha256=None, downloads_dir=dl)
    assert result.path.read_bytes() == other                        # not a mix of both
    assert server.sent(PATH)[-1].if_range == old and result.provisional


def test_server_without_validator_never_resumes_an_unpinned_part(server, dl):
    server.add(PATH, BODY, etag=False, drop_after=100_000, drop_times=2)
    result = fetch("sdk", server.url(PATH), sha256=None, downloads_dir=dl)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == [None, None, None]


def test_part_left_by_a_mirror_is_not_resumed_from_the_origin(server, dl):
    server.add(f"/m/{NAME}", BODY[::-1], drop_after=5000, drop_times=99)
    server.add(PATH, BODY)
    result = fetch("sdk", server.url(PATH), sha256=None, downloads_dir=dl, mirrors=[server.url("/m")])
    assert result.path.read_bytes() == BODY and server.ranges(PATH) == [None]


def test_corrupted_download_is_rejected_removed_and_refetched(server, dl):
    server.add(PATH, BODY, corrupt_at=12345)
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    message = str(err.value)
    bad = hashlib.sha256(BODY[:12345] + bytes([BODY[12345] ^ 0xFF]) + BODY[12346:]).hexdigest()
    assert SHA in message and bad in message and server.url(PATH) in message
    cached = slot(dl, server.url(PATH), sha256=SHA)
    assert not cached.exists() and not cached.with_name(f"{NAME}.part").exists()

    server.routes[PATH].corrupt_at = None      # the server is fixed
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY and server.count(PATH) == 2


def test_mirrors_are_tried_first_in_order(server, dl, tmp_path):
    server.add(PATH, BODY)
    server.add(f"/mirror/{NAME}", BODY)
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl,
                   mirrors=[server.url("/empty-mirror"), server.url("/mirror/")])
    assert result.source == server.url(f"/mirror/{NAME}")
    assert server.count(f"/empty-mirror/{NAME}") == 1 and server.count(PATH) == 0


def test_directory_and_file_url_mirrors_are_used_in_place(server, dl, tmp_path):
    server.add(PATH, BODY)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(BODY)
    for base in (str(mirror), mirror.as_uri()):
        result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl, mirrors=[base])
        assert result.path == mirror / NAME
    assert server.count(PATH) == 0 and not slot(dl, server.url(PATH), sha256=SHA).exists()


def test_all_sources_failing_names_each_one_and_why(server, dl, tmp_path):
    server.add(f"/m/{NAME}", BODY, corrupt_at=0)
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl,
              mirrors=[server.url("/m"), str(tmp_path / "nowhere")])
    message = str(err.value)
    assert f"{server.url('/m/' + NAME)}: sha256 mismatch" in message
    assert f"{tmp_path / 'nowhere' / NAME}: no such file" in message
    assert f"{server.url(PATH)}: HTTP 404" in message


def test_offline_uses_the_cache_and_names_what_is_missing(server, dl):
    server.add(PATH, BODY)
    fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl, offline=True)
    assert result.path.read_bytes() == BODY and server.count(PATH) == 1

    other = "/rknn-llm/raw/main/rknpu-driver/rknpu_driver_0.9.6_20240322.tar.bz2"
    server.add(other, BODY)
    with pytest.raises(UserError) as err:
        fetch("old-driver", server.url(other), sha256=SHA, downloads_dir=dl, offline=True)
    message = str(err.value)
    assert "old-driver" in message and "rknpu_driver_0.9.6_20240322.tar.bz2" in message
    assert server.url(other) in message and "rk3576-build run fetch" in message
    assert str(dl) in message and "mirror" in message
    assert server.count(other) == 0


def test_lock_file_pins_first_fetch_then_enforces_it(server, tmp_path):
    lock = tmp_path / "recipes" / "demo.lock.yaml"
    lock.parent.mkdir()
    lock.write_text("sources:\n  sdk: {url: /opt/sdk.tar.gz, sha256: " + "a" * 64 + ", size: 1}\n")
    server.add(PATH, BODY)
    first = fetch("driver", server.url(PATH), sha256=None, downloads_dir=tmp_path / "dl1",
                  lock_file=lock)
    assert first.provisional and first.sha256 == SHA
    assert "driver" not in lock.read_text()        # pinned only once it unpacked cleanly
    with settle_after_unpack("driver", server.url(PATH), vars(first), lock_file=lock):
        pass                                       # the unpack went fine
    text = lock.read_text()
    assert text.startswith("# Written by rk3576-build") and "commit" in text.lower()
    sources = yaml.safe_load(text)["sources"]
    assert sources["driver"] == {"url": server.url(PATH), "sha256": SHA, "size": len(BODY)}
    assert sources["sdk"]["sha256"] == "a" * 64               # other entries kept

    second = fetch("driver", server.url(PATH), sha256=None, downloads_dir=tmp_path / "dl2",
                   lock_file=lock)
    assert not second.provisional and second.sha256 == SHA

    server.routes[PATH].body = changed = BODY + b"!"           # upstream replaced the file
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=None, downloads_dir=tmp_path / "dl3",
              lock_file=lock)
    message = str(err.value)
    assert SHA in message and hashlib.sha256(changed).hexdigest() in message
    assert str(lock) in message and "delete the `driver` entry" in message
    assert yaml.safe_load(lock.read_text())["sources"]["driver"]["sha256"] == SHA


def test_local_files_are_verified_in_place(tmp_path, dl):
    sdk = tmp_path / "MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz"
    sdk.write_bytes(BODY)
    for url in (str(sdk), sdk.as_uri()):
        result = fetch("sdk", url, sha256=SHA, downloads_dir=dl)
        assert result.path == sdk and result.source == str(sdk) and result.sha256 == SHA
    assert not (dl / sdk.name).exists()        # not copied into the cache

    sdk.write_bytes(BODY[::-1])                # the local file changed: stamp is not trusted
    with pytest.raises(UserError) as err:
        fetch("sdk", str(sdk), sha256=SHA, downloads_dir=dl)
    assert SHA in str(err.value) and hashlib.sha256(BODY[::-1]).hexdigest() in str(err.value)
    assert sdk.exists()                        # a user's own file is never deleted


def test_local_file_with_lock_pin_fails_with_both_checksums_when_changed(tmp_path, dl):
    src = tmp_path / "driver.tar.bz2"
    src.write_bytes(b"one")
    lock = tmp_path / "lock.yaml"
    first = fetch("driver", str(src), sha256=None, downloads_dir=dl, lock_file=lock)
    with settle_after_unpack("driver", str(src), vars(first), lock_file=lock):
        pass
    src.write_bytes(b"two")
    with pytest.raises(UserError) as err:
        fetch("driver", str(src), sha256=None, downloads_dir=dl, lock_file=lock)
    for data in (b"one", b"two"):
        assert hashlib.sha256(data).hexdigest() in str(err.value)


def test_missing_sdk_says_how_to_get_it(tmp_path, dl):
    missing = tmp_path / "MYD-LR3576-Distribution-L6.1.75-V1.1.0.tar.gz"
    with pytest.raises(UserError) as err:
        fetch("sdk", str(missing), sha256=None, downloads_dir=dl)
    message = str(err.value)
    assert str(missing) in message and "MYIR" in message and "portal" in message
    assert "set MYIR_SDK=" in message and "recipes/<name>.local.yaml" in message
    with pytest.raises(UserError) as err:
        fetch("patches", missing.as_uri(), sha256=None, downloads_dir=dl)
    assert str(missing) in str(err.value) and "MYIR_SDK" not in str(err.value)


def test_credentials_in_urls_never_leak(server, tmp_path, dl):
    secret = "s3cr3t-pw"
    server.add(PATH, BODY, auth=("builder", secret))
    lock = tmp_path / "lock.yaml"
    result = fetch("driver", server.url(PATH, f"builder:{secret}"), sha256=None,
                   downloads_dir=dl, lock_file=lock)
    with settle_after_unpack("driver", server.url(PATH, f"builder:{secret}"), vars(result),
                             lock_file=lock):
        pass
    assert result.path.read_bytes() == BODY        # the credentials were sent ...
    assert server.requests[-1].authorization.startswith("Basic ")
    assert secret not in result.source and "builder" not in result.source
    assert server.url(PATH) in lock.read_text()
    leftovers = [p.read_bytes() for p in dl.rglob("*") if p.is_file()]
    assert leftovers and not any(secret.encode() in data for data in leftovers)

    server.add("/missing.tar.gz", b"", status=404)
    with pytest.raises(UserError) as err:          # ... and never shown
        fetch("x", server.url("/missing.tar.gz", f"builder:{secret}"), sha256=SHA,
              downloads_dir=dl, mirrors=[server.url("/m", f"u:{secret}")])
    assert secret not in str(err.value) and "HTTP 404" in str(err.value)


def test_bad_checksum_and_name_are_user_errors(dl):
    with pytest.raises(UserError, match="64 hex digits"):
        fetch("driver", "/x.tar.gz", sha256="abc", downloads_dir=dl)
    with pytest.raises(UserError, match="unsupported URL"):
        fetch("driver", "ftp://host/x.tar.gz", sha256=None, downloads_dir=dl)


def test_unreachable_server_is_a_clear_error(dl):
    with pytest.raises(UserError) as err:
        fetch("driver", "http://127.0.0.1:9/x.tar.gz", sha256=SHA, downloads_dir=dl)
    assert "http://127.0.0.1:9/x.tar.gz" in str(err.value) and "Connection" in str(err.value)


def test_default_downloads_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("RK3576_DL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_downloads_dir() == tmp_path / "xdg" / "rk3576-build" / "downloads"
    assert default_downloads_dir(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.setenv("RK3576_DL_DIR", str(tmp_path / "env"))
    assert default_downloads_dir(tmp_path / "cfg") == tmp_path / "env"


def test_unpinned_cache_entry_from_another_url_is_not_reused(server, dl):
    server.add(f"/v1/{NAME}", b"version one")
    server.add(f"/v2/{NAME}", b"version two")
    fetch("driver", server.url(f"/v1/{NAME}"), sha256=None, downloads_dir=dl)
    result = fetch("driver", server.url(f"/v2/{NAME}"), sha256=None, downloads_dir=dl)
    assert result.path.read_bytes() == b"version two" and server.count(f"/v2/{NAME}") == 1


def test_sha256_typo_keeps_the_good_cached_copy_and_says_which_is_which(server, dl):
    """Finding 3: the server still serves the cached file (304): no download, nothing deleted."""
    server.add(PATH, BODY)
    good = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    typo = SHA[:-1] + ("0" if SHA[-1] != "0" else "1")
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=typo, downloads_dir=dl)
    message = str(err.value)
    assert good.path.read_bytes() == BODY                       # kept, stamp intact
    assert f"expected {typo}" in message or typo in message
    assert f"cached as {good.path} (sha256 {SHA}" in message and "typo" in message
    assert f"The cached {good.path} is kept" in message
    assert server.sent(PATH)[-1].if_none_match == server.routes[PATH].tag()
    assert fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl).path == good.path
    assert server.count(PATH) == 2                              # the 304 only


def test_sha256_mismatch_without_validator_downloads_once_and_keeps_the_cached_copy(server, dl):
    server.add(PATH, BODY, etag=False)
    good = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256="0" * 64, downloads_dir=dl)
    message = str(err.value)
    assert f"expected {'0' * 64} (the recipe's sha256), got {SHA}" in message
    assert f"The cached {good.path} is kept: it is intact (sha256 {SHA}" in message
    assert good.path.read_bytes() == BODY and not good.path.with_name(f"{NAME}.part").exists()


def test_new_sha256_for_a_changed_upstream_file_replaces_the_cached_copy(server, dl):
    server.add(PATH, BODY)
    fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    server.routes[PATH].body = new = BODY + b"v2"
    result = fetch("driver", server.url(PATH), sha256=hashlib.sha256(new).hexdigest(), downloads_dir=dl)
    assert result.path.read_bytes() == new


def test_two_files_sharing_a_name_coexist_in_the_cache(server, dl):
    """Finding 13: the demo's sample driver and the real one have the same file name."""
    demo = b"sample driver"
    server.add(PATH, BODY)
    server.add(f"/demo-sources/{NAME}", demo)
    real_url, demo_url = server.url(PATH), server.url(f"/demo-sources/{NAME}")
    for _ in range(2):
        real = fetch("driver", real_url, sha256=SHA, downloads_dir=dl)
        sample = fetch("driver", demo_url, sha256=hashlib.sha256(demo).hexdigest(), downloads_dir=dl)
    assert real.path.name == sample.path.name == NAME and real.path != sample.path
    assert real.path.read_bytes() == BODY and sample.path.read_bytes() == demo
    assert server.count(PATH) == server.count(f"/demo-sources/{NAME}") == 1


def test_a_pinned_file_from_a_new_port_or_mirror_reuses_its_slot(server, dl):
    """The demo serves its sources on a new loopback port each run: one cache entry, one download."""
    server.add(PATH, BODY)
    first = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    with LoopbackServer() as other:                      # the next run: another port
        other.add(PATH, BODY)
        assert other.port != server.port
        second = fetch("driver", other.url(PATH), sha256=SHA, downloads_dir=dl)
        mirrored = fetch("driver", other.url(PATH), sha256=SHA, downloads_dir=dl,
                         mirrors=[other.url("/elsewhere")])
        assert other.count(PATH) == 0 and other.count(f"/elsewhere/{NAME}") == 0
    assert second.path == first.path == mirrored.path and second.path.read_bytes() == BODY
    assert [p.name for p in dl.iterdir()] == [f"sha256-{SHA}"] and server.count(PATH) == 1


def test_an_unpinned_download_serves_a_later_pinned_fetch_from_another_url(server, dl):
    server.add(PATH, BODY)
    unpinned = fetch("driver", server.url(PATH), sha256=None, downloads_dir=dl)
    with LoopbackServer() as other:
        other.add(PATH, BODY)
        pinned = fetch("driver", other.url(PATH), sha256=SHA, downloads_dir=dl)
        assert other.count(PATH) == 0
    assert pinned.path == unpinned.path and not pinned.provisional and len(list(dl.glob(f"*/{NAME}"))) == 1
    # A copy that no longer matches its record is not trusted: the pinned fetch downloads its own.
    os.utime(unpinned.path, ns=(1, 1))
    with LoopbackServer() as third:
        third.add(PATH, BODY)
        again = fetch("driver", third.url(PATH), sha256=SHA, downloads_dir=dl)
        assert third.count(PATH) == 1 and again.path == slot(dl, third.url(PATH), sha256=SHA)


def test_a_second_process_waits_for_the_download_and_says_how_far_it_got(server, dl):
    """Two real processes: this one downloads slowly, the other waits and logs who it waits for."""
    body = os.urandom(1024 * 1024)
    sha = hashlib.sha256(body).hexdigest()
    server.add(PATH, body, trickle=(64 * 1024, 0.25))   # about 4 s
    results = []
    holder = threading.Thread(target=lambda: results.append(
        fetch("driver", server.url(PATH), sha256=sha, downloads_dir=dl)))
    holder.start()
    part = slot(dl, server.url(PATH), sha256=sha).with_name(f"{NAME}.part")
    wait_until(part.exists, "the holder's .part", timeout=10, interval=0.02)
    waiter = subprocess.run(
        [sys.executable, "-c",
         "import sys; from rk3576_build.core import logs; from rk3576_build.sources import fetch, slots; "
         "logs.setup(0); slots.WAIT_REPORT_SECONDS = 0.5; "
         "print(fetch.fetch('driver', sys.argv[1], sha256=sys.argv[2], downloads_dir=sys.argv[3]).path)",
         server.url(PATH), sha, str(dl)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    holder.join(30)
    assert waiter.returncode == 0, waiter.stderr
    lines = waiter.stderr.splitlines()
    assert lines[0].startswith(f"waiting for {NAME}: process {os.getpid()} on {socket.gethostname()} "
                               f"is fetching it into {part.parent} ("), lines
    waiting = [line for line in lines if line.startswith(f"still waiting for {NAME} (process {os.getpid()}")]
    progress = [line for line in waiting if " KiB so far, " in line]
    assert len(progress) >= 2 and all(line in progress or line.endswith("its download has ended")
                                      for line in waiting), lines
    sizes = [float(line.split("): ")[1].split(" KiB")[0]) for line in progress]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]              # the .part grew meanwhile
    assert "the other process is done with it" in lines[-1]
    assert waiter.stdout.strip() == str(results[0].path) and server.count(PATH) == 1  # no second download


def test_what_a_shared_lock_file_says_is_shown_only_when_well_formed(server, dl, caplog):
    server.add(PATH, BODY)
    lock = slot(dl, server.url(PATH), sha256=SHA).with_name(f"{NAME}.lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        handle.write("\x1b[2J\x1b[31mrm -rf ~ \n")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)               # someone else's download
        waiter = threading.Thread(target=fetch, args=("driver", server.url(PATH)),
                                  kwargs={"sha256": SHA, "downloads_dir": dl})
        with caplog.at_level("INFO", logger="rk3576_build"):
            waiter.start()
            deadline = time.monotonic() + 10
            while "waiting for" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            fcntl.flock(handle, fcntl.LOCK_UN)
            waiter.join(30)
    assert f"waiting for {NAME}: another process is fetching it into {lock.parent} (not downloading yet)" \
        in caplog.text and "\x1b" not in caplog.text
    assert lock.read_text() == f"process {os.getpid()} on {socket.gethostname()}\n"  # the waiter's turn


def test_stall_is_detected_quickly_keeps_what_arrived_and_resumes(server, dl, monkeypatch):
    """Finding 10: a stall fails within the stall timeout, naming the source and how far it got."""
    monkeypatch.setenv("RK3576_STALL_TIMEOUT", "1")
    server.add(PATH, BODY, stall_after=200_000, stall_for=4)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert time.monotonic() - started < 3
    message = str(err.value)
    assert f"{server.url(PATH)}: stalled: nothing received for 1 s, after 195.3 KiB of 3.0 MiB" in message
    part = slot(dl, server.url(PATH), sha256=SHA).with_name(f"{NAME}.part")
    assert part.stat().st_size == 200_000 and "next run resumes" in message
    server.routes[PATH].stall_after = None
    assert fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl).path.read_bytes() == BODY
    assert server.ranges(PATH)[-1] == "bytes=200000-"


def test_a_trickle_counts_as_a_stall_and_its_bytes_are_on_disk(server, dl, monkeypatch):
    monkeypatch.setenv("RK3576_STALL_TIMEOUT", "1")
    server.add(PATH, BODY, trickle=(2000, 0.1))          # 20 KB/s: under 64 KiB per second
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert time.monotonic() - started < 4
    assert "stalled: " in str(err.value) and " bytes in 1 s, after " in str(err.value)
    part = slot(dl, server.url(PATH), sha256=SHA).with_name(f"{NAME}.part")
    assert 10_000 <= part.stat().st_size < 100_000      # written as it arrived, not in 1 MiB chunks


def test_transient_server_errors_are_retried_with_backoff(server, dl):
    server.add(PATH, BODY, fail_times=2, fail_status=503)
    assert fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl).path.read_bytes() == BODY
    assert server.count(PATH) == 3
    server.add("/down.tar.gz", BODY, fail_times=99, fail_status=502)
    with pytest.raises(UserError, match="HTTP 502"):
        fetch("x", server.url("/down.tar.gz"), sha256=SHA, downloads_dir=dl)
    assert server.count("/down.tar.gz") == 1 + http_mod.RETRIES


def test_redact_scrubs_userinfo_everywhere():
    text = "got https://u:p%40ss@host:8/x and http://tok@h/y; ssh://git@h/z, file:///a@b"
    assert redact_url(text) == "got https://host:8/x and http://h/y; ssh://h/z, file:///a@b"
    nested = {"sdk": {"url": "https://me:pw@h/f.tgz"}, "mirrors": ["http://a:b@m/"], "n": 3}
    assert redact(nested) == {"sdk": {"url": "https://h/f.tgz"}, "mirrors": ["http://m/"], "n": 3}


def test_redacting_a_long_url_takes_linear_time():
    """A 1 MB host name once made `plan` spin for minutes (the scheme pattern retried at every letter)."""
    long = "http://" + "h" * (1 << 20)
    started = time.monotonic()
    assert redact_url(long) == long
    assert redact_url("x" * (1 << 20) + " ftp://u:p@h/") == "x" * (1 << 20) + " ftp://h/"
    assert time.monotonic() - started < 2


def _small_tar_gz() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for i in range(3):
            data = os.urandom(50_000)
            info = tarfile.TarInfo(f"sdk/file{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_damaged_first_download_is_not_pinned_but_removed_then_refetched(server, dl, tmp_path):
    """Finding 2: a truncated SDK on first use is neither pinned nor kept."""
    good = _small_tar_gz()
    server.add("/sdk.tar.gz", good[: len(good) // 2])
    url, lock = server.url("/sdk.tar.gz"), tmp_path / "recipe.lock.yaml"
    first = fetch("sdk", url, sha256=None, downloads_dir=dl, lock_file=lock)
    assert first.provisional
    with pytest.raises(UserError) as err:
        with settle_after_unpack("sdk", url, vars(first), lock_file=lock):
            unpack(first.path, tmp_path / "work" / "sdk")
    message = str(err.value)
    assert message.startswith(f"the download is damaged: {first.path}: ")
    assert f"removed {first.path}" in message and "run again to download it afresh" in message
    assert not first.path.exists() and not lock.exists()

    server.routes["/sdk.tar.gz"].body = good              # the server is fixed
    second = fetch("sdk", url, sha256=None, downloads_dir=dl, lock_file=lock)
    with settle_after_unpack("sdk", url, vars(second), lock_file=lock):
        unpack(second.path, tmp_path / "work" / "sdk")
    assert server.count("/sdk.tar.gz") == 2
    assert yaml.safe_load(lock.read_text())["sources"]["sdk"]["sha256"] == hashlib.sha256(good).hexdigest()


def test_damaged_archive_matching_its_sha256_is_kept_and_says_so(server, dl, tmp_path):
    bad = _small_tar_gz()[:-100]
    server.add("/sdk.tar.gz", bad)
    url, sha = server.url("/sdk.tar.gz"), hashlib.sha256(bad).hexdigest()
    result = fetch("sdk", url, sha256=sha, downloads_dir=dl)
    with pytest.raises(UserError) as err:
        with settle_after_unpack("sdk", url, vars(result), sha256=sha):
            unpack(result.path, tmp_path / "sdk")
    assert "matches the recipe's sha256, so the source itself is damaged; it was kept" in str(err.value)
    assert result.path.exists()
