"""Signed build-cache entries (OpenSSH SSHSIG through the real ssh-keygen): a mirror's entry is
taken only when one of `cache.trusted` signed its index; otherwise it is refused with one line,
nothing of it is placed (links included), and the step builds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cache_fixtures import PRODUCTS, entry_dir, key_of, make_sdk, tree
from rk3576_build.build.cache import NAMESPACE, Cache, restore_or_build
from rk3576_build.core import signing
from rk3576_build.core.errors import UserError

pytestmark = pytest.mark.skipif(not shutil.which("ssh-keygen") and os.environ.get("CI") != "true",
                                reason="ssh-keygen is not installed")


def make_key(base: Path, name: str) -> Path:
    key = base / "keys" / name
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
    return key


@pytest.fixture
def setup(tmp_path):
    """The team's key and a stranger's; an SDK; a fresh tree (links in place) to restore into."""
    team, stranger = make_key(tmp_path, "team"), make_key(tmp_path, "stranger")
    sdk = make_sdk(tmp_path / "sdk")
    fresh = tmp_path / "fresh"
    (fresh / "output").mkdir(parents=True)
    (fresh / "rockdev").symlink_to("output/firmware")
    return tmp_path, team, stranger, sdk, fresh


def publish(mirror: Path, sdk: Path, key: str, signing_key: Path | None) -> Path:
    """What another machine stores into the shared directory (signed with `signing_key`, if any)."""
    assert Cache.from_urls(store=f"dir:{mirror}", signing_key=signing_key).save(key, sdk, PRODUCTS)
    return entry_dir(mirror, key)


def consumer(base: Path, reports: list, **trust) -> Cache:
    """This machine: the shared directory as a mirror, its own store."""
    return Cache.from_urls([f"dir:{base / 'mirror'}"], f"dir:{base / 'store'}", report=reports.append, **trust)


def refused_and_built(cache: Cache, key: str, fresh: Path) -> list[str]:
    """The step is built (nothing of the refused entry placed, its links included)."""
    before = tree(fresh)
    built = []
    record = restore_or_build(cache, key, fresh, lambda: built.append(tree(fresh)), products=[])
    assert record["result"] == "built" and built == [before]
    return built


def test_an_entry_signed_by_a_trusted_key_is_taken_and_its_copy_keeps_the_signature(setup):
    base, team, _, sdk, fresh = setup
    key = key_of()
    published = publish(base / "mirror", sdk, key, team)
    assert signing.parse_signature((published / "index.json.sig").read_bytes())["namespace"] == NAMESPACE
    reports = []
    cache = consumer(base, reports, trusted=[str(team) + ".pub"])
    assert cache.restore(key, fresh).url == f"dir:{base / 'mirror'}" and reports == []
    assert tree(fresh) == tree(sdk)
    copy = entry_dir(base / "store", key)
    assert (copy / "index.json.sig").read_bytes() == (published / "index.json.sig").read_bytes()


@pytest.mark.parametrize("signer,trusted,reason", [
    (None, "team", r"unsigned: name its signer's public key in cache\.trusted \(or set cache\.trust: any"),
    ("stranger", "team", r"signed by an untrusted key SHA256:\S+: add its \.pub to the trusted keys"),
    ("team", None, r"signed, but cache\.trusted names no signer"),
], ids=["unsigned", "signed by an untrusted key", "no trusted signers"])
def test_a_mirror_entry_not_signed_by_a_trusted_key_is_refused_and_the_step_builds(setup, signer, trusted, reason):
    base, team, stranger, sdk, fresh = setup
    keys = {"team": team, "stranger": stranger}
    key = key_of()
    publish(base / "mirror", sdk, key, keys.get(signer))
    reports = []
    cache = consumer(base, reports, trusted=[str(keys[trusted]) + ".pub"] if trusted else [])
    refused_and_built(cache, key, fresh)
    assert len(reports) == 1 and "\n" not in reports[0], reports
    assert reports[0].startswith(f"cache: refused entry {key[:12]} from dir:{base / 'mirror'}: ")
    assert re.search(reason, reports[0]), reports[0]
    # The store got the step as built here, signed by nobody: it is this machine's own.
    assert not (entry_dir(base / "store", key) / "index.json.sig").exists()


def test_a_tampered_signed_entry_is_refused(setup):
    """Whoever can write the shared directory rewrites a file and its digest in the index: the signature breaks."""
    base, team, _, sdk, fresh = setup
    key = key_of()
    published = publish(base / "mirror", sdk, key, team)
    (sdk / "u-boot" / "uboot.img").write_bytes(b"a u-boot with a backdoor\n")
    forged = base / "forged"
    Cache.from_urls(store=f"dir:{forged}").save(key, sdk, PRODUCTS)  # a well-formed entry of other bytes
    for name in ("index.json", "products.zst"):
        (published / name).write_bytes((entry_dir(forged, key) / name).read_bytes())
    reports = []
    refused_and_built(consumer(base, reports, trusted=[str(team) + ".pub"]), key, fresh)
    assert len(reports) == 1 and "bad signature by SHA256:" in reports[0] and "signed content changed" in reports[0]
    # A signature for another purpose (a release's namespace) does not pass for an entry's either.
    index = (published / "index.json").read_bytes()
    (published / "index.json.sig").write_bytes(signing.sign(index, team, "rk3576-build-release"))
    reports.clear()
    shutil.rmtree(entry_dir(base / "store", key))  # (the step built above was stored there)
    refused_and_built(consumer(base, reports, trusted=[str(team) + ".pub"]), key, fresh)
    assert "wrong namespace" in reports[0]


def test_trust_any_takes_unsigned_mirror_entries(setup):
    base, _, _, sdk, fresh = setup
    key = key_of()
    publish(base / "mirror", sdk, key, None)
    reports = []
    assert consumer(base, reports, trust="any").restore(key, fresh).url == f"dir:{base / 'mirror'}"
    assert tree(fresh) == tree(sdk) and reports == []
    with pytest.raises(UserError, match="cache.trust: 'some' is not one of signed, any"):
        consumer(base, reports, trust="some")


def test_a_signing_store_refuses_an_unsigned_entry_in_it_and_replaces_it(setup):
    """Once the store signs, an unsigned entry in it was not written by this cache: refused, rebuilt, replaced."""
    base, team, _, sdk, fresh = setup
    key = key_of()
    Cache.from_urls(store=f"dir:{base / 'store'}").save(key, sdk, PRODUCTS)  # unsigned, by someone else
    reports = []
    cache = Cache.from_urls(store=f"dir:{base / 'store'}", signing_key=team, report=reports.append)
    refused_and_built(cache, key, fresh)
    assert "unsigned" in reports[0]
    index = (entry_dir(base / "store", key) / "index.json").read_bytes()
    signature = (entry_dir(base / "store", key) / "index.json.sig").read_bytes()
    assert signing.verify(index, signature, [str(team) + ".pub"], NAMESPACE)
    # Its own signature is trusted without naming its key: the next run restores it.
    again = Cache.from_urls(store=f"dir:{base / 'store'}", signing_key=team, report=reports.append)
    assert again.restore(key, base / "again").url == f"dir:{base / 'store'}" and len(reports) == 1


def test_a_missing_signing_key_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"cache.signing_key .*nope not found"):
        Cache.from_urls(store=f"dir:{tmp_path / 'store'}", signing_key="nope", base_dir=tmp_path)
    with pytest.raises(UserError, match="trusted key file"):
        Cache.from_urls(store=f"dir:{tmp_path / 'store'}", trusted=["missing.pub"], base_dir=tmp_path)


def test_the_signature_covers_every_files_digest(setup):
    """What is signed is the index as stored: every file's sha256 and size, and the links."""
    base, team, _, sdk, _ = setup
    published = publish(base / "mirror", sdk, key_of(), team)
    index = json.loads((published / "index.json").read_bytes())
    assert {f["path"] for f in index["files"]} == {"u-boot/uboot.img", "output/firmware/parameter.txt",
                                                   "output/modules/rknpu.ko", "output/modules/mkmodules.sh"}
    assert all(len(f["sha256"]) == 64 for f in index["files"]) and index["links"]
    signing.verify((published / "index.json").read_bytes(), (published / "index.json.sig").read_bytes(),
                   [str(team) + ".pub"], NAMESPACE)
