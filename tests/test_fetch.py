"""fetch(): download cache, resume, checksums, mirrors, offline mode, lock-file pins, local files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from rk3576_build import fetch as fetch_mod
from rk3576_build.errors import UserError
from rk3576_build.fetch import default_downloads_dir, fetch

from http_server import LoopbackServer

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


def test_download_is_verified_stamped_and_then_served_from_cache(server, dl):
    server.add(PATH, BODY)
    first = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert first.path == dl / NAME and first.path.read_bytes() == BODY
    assert (first.sha256, first.size, first.pinned) == (SHA, len(BODY), False)
    assert SHA in (dl / f"{NAME}.done").read_text()
    assert not (dl / f"{NAME}.part").exists()

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
    part = dl / f"{NAME}.part"
    kept = part.stat().st_size
    assert kept == 100_000 * fetch_mod.MAX_ATTEMPTS

    server.routes[PATH].drop_times = 0        # the network is back
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY and not part.exists()
    assert server.ranges(PATH)[-1] == f"bytes={kept}-"


def test_server_ignoring_range_still_ends_verified(server, dl):
    server.add(PATH, BODY, honour_range=False)
    dl.mkdir()
    (dl / f"{NAME}.part").write_bytes(BODY[:1000])   # left by an earlier run
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == ["bytes=1000-"]      # asked, got 200, restarted cleanly


def test_stale_part_from_another_file_is_restarted_from_zero(server, dl):
    server.add(PATH, BODY)
    dl.mkdir()
    (dl / f"{NAME}.part").write_bytes(b"x" * 5000)    # not a prefix of BODY
    result = fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    assert result.path.read_bytes() == BODY
    assert server.ranges(PATH) == ["bytes=5000-", None]


def test_corrupted_download_is_rejected_removed_and_refetched(server, dl):
    server.add(PATH, BODY, corrupt_at=12345)
    with pytest.raises(UserError) as err:
        fetch("driver", server.url(PATH), sha256=SHA, downloads_dir=dl)
    message = str(err.value)
    bad = hashlib.sha256(BODY[:12345] + bytes([BODY[12345] ^ 0xFF]) + BODY[12346:]).hexdigest()
    assert SHA in message and bad in message and server.url(PATH) in message
    assert not (dl / NAME).exists() and not (dl / f"{NAME}.part").exists()

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
    assert server.count(PATH) == 0 and not (dl / NAME).exists()


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
    assert first.pinned and first.sha256 == SHA
    text = lock.read_text()
    assert text.startswith("# Written by rk3576-build") and "commit" in text.lower()
    sources = yaml.safe_load(text)["sources"]
    assert sources["driver"] == {"url": server.url(PATH), "sha256": SHA, "size": len(BODY)}
    assert sources["sdk"]["sha256"] == "a" * 64               # other entries kept

    second = fetch("driver", server.url(PATH), sha256=None, downloads_dir=tmp_path / "dl2",
                   lock_file=lock)
    assert not second.pinned and second.sha256 == SHA

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
    assert fetch("driver", str(src), sha256=None, downloads_dir=dl, lock_file=lock).pinned
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
    assert result.path.read_bytes() == BODY        # the credentials were sent ...
    assert server.requests[-1].authorization.startswith("Basic ")
    assert secret not in result.source and "builder" not in result.source
    assert secret not in lock.read_text() and secret not in (dl / f"{NAME}.done").read_text()

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
