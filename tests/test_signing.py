"""SSHSIG signatures through the real ssh-keygen: keys made in tmp_path, an encrypted key
through SSH_ASKPASS and through a real ssh-agent, and every way a check must fail."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import wait_until
from rk3576_build.core import signing
from rk3576_build.core.errors import UserError
from rk3576_build.core.signing import SignatureError

NS = "test@rk3576-build.invalid"
PASSPHRASE = "correct horse battery staple 7f3a"

pytestmark = pytest.mark.skipif(not shutil.which("ssh-keygen") and os.environ.get("CI") != "true",
                                reason="ssh-keygen is not installed")


def make_key(tmp_path: Path, name: str, passphrase: str = "") -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", f"{name}@test", "-f", str(key)],
                   check=True)
    return key


def askpass(tmp_path: Path, passphrase: str) -> Path:
    secret = tmp_path / "passphrase"
    secret.write_text(passphrase + "\n")
    secret.chmod(0o600)
    script = tmp_path / "askpass.sh"
    script.write_text(f"#!/bin/sh\ncat '{secret}'\n")
    script.chmod(0o700)
    return script


def fingerprint_by_ssh_keygen(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_sign_verify_returns_signer_fingerprint(tmp_path):
    key = make_key(tmp_path, "release")
    signature = signing.sign(b"payload", key, NS)
    assert signature.startswith(b"-----BEGIN SSH SIGNATURE-----")
    signer = signing.verify(b"payload", signature, [str(key) + ".pub"], NS)
    assert signer == fingerprint_by_ssh_keygen(key.with_suffix(".pub"))
    # the same key given as a public key line, or among other keys in an authorized_keys-style file
    line = key.with_suffix(".pub").read_text()
    assert signing.verify(b"payload", signature, [line], NS) == signer
    other = make_key(tmp_path, "other")
    keys_file = tmp_path / "trusted_keys"
    keys_file.write_text(f"# release keys\n{other.with_suffix('.pub').read_text()}"
                         f'namespaces="{NS}",cert-authority {line}')
    assert signing.verify(b"payload", signature, keys_file, NS) == signer


def test_flipped_byte_wrong_namespace_untrusted_and_unsigned_fail(tmp_path):
    key = make_key(tmp_path, "release")
    pub = [key.with_suffix(".pub")]
    signature = signing.sign(b"payload", key, NS)
    with pytest.raises(SignatureError, match=r"^blob: bad signature by SHA256:") as err:
        signing.verify(b"paylOad", signature, pub, NS, label="blob")
    assert err.value.exit_code == 1
    with pytest.raises(SignatureError, match="wrong namespace: signed for 'test@rk3576-build.invalid', expected 'x@y'"):
        signing.verify(b"payload", signature, pub, "x@y")
    stranger = make_key(tmp_path, "stranger")
    with pytest.raises(SignatureError, match="untrusted key SHA256:"):
        signing.verify(b"payload", signature, [stranger.with_suffix(".pub")], NS)
    with pytest.raises(SignatureError, match="unsigned"):
        signing.verify(b"payload", b"", pub, NS)
    with pytest.raises(SignatureError, match="no trusted keys"):
        signing.verify(b"payload", signature, [], NS)
    # a flipped byte inside the signature itself (in the signature bytes, past key and namespace)
    lines = signature.decode().splitlines()
    body = list(lines[3])
    body[10] = "A" if body[10] != "A" else "B"
    damaged = "\n".join(lines[:3] + ["".join(body)] + lines[4:]).encode()
    with pytest.raises(SignatureError, match="bad signature"):
        signing.verify(b"payload", damaged, pub, NS)
    with pytest.raises(SignatureError, match="bad signature .not an armored"):
        signing.verify(b"payload", b"garbage", pub, NS)


def test_sign_file_and_verify_file(tmp_path):
    key = make_key(tmp_path, "release")
    target = tmp_path / "SHA256SUMS"
    target.write_bytes(os.urandom(3 << 20))
    sig = signing.sign_file(target, key, NS)
    assert sig == tmp_path / "SHA256SUMS.sig"
    # ssh-keygen itself accepts it (what docs/release.md tells a user to run)
    allowed = tmp_path / "allowed"
    allowed.write_text(f"me {key.with_suffix('.pub').read_text()}")
    with target.open("rb") as fh:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "me", "-n", NS, "-s", str(sig)],
                       stdin=fh, check=True, capture_output=True)
    assert signing.verify_file(target, [key.with_suffix(".pub")], NS).startswith("SHA256:")
    with target.open("r+b") as fh:
        fh.seek(1 << 20)
        byte = fh.read(1)
        fh.seek(1 << 20)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(SignatureError, match="^SHA256SUMS: bad signature"):
        signing.verify_file(target, [key.with_suffix(".pub")], NS)
    sig.unlink()
    with pytest.raises(SignatureError, match=r"SHA256SUMS: unsigned \(SHA256SUMS.sig is missing\)"):
        signing.verify_file(target, [key.with_suffix(".pub")], NS)


def test_encrypted_key_through_askpass_never_shows_passphrase(tmp_path, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    key = make_key(tmp_path, "locked", PASSPHRASE)
    monkeypatch.setenv("SSH_ASKPASS", str(askpass(tmp_path, PASSPHRASE)))
    monkeypatch.delenv("SSH_ASKPASS_REQUIRE", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    signature = signing.sign(b"payload", key, NS)
    assert signing.verify(b"payload", signature, [key.with_suffix(".pub")], NS)
    # a wrong passphrase: one line saying what to do, without any passphrase in it
    monkeypatch.setenv("SSH_ASKPASS", str(askpass(tmp_path, "wrong " + PASSPHRASE)))
    with pytest.raises(UserError) as err:
        signing.sign(b"payload", key, NS)
    assert "ssh-agent" in str(err.value) and "\n" not in str(err.value)
    out, errout = capfd.readouterr()
    for text in (out, errout, caplog.text, str(err.value), signature.decode()):
        assert PASSPHRASE not in text


def test_encrypted_key_in_ssh_agent_signs_through_its_pub(tmp_path, monkeypatch, capfd):
    key = make_key(tmp_path, "agentkey", PASSPHRASE)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, "ssh-agent's socket", timeout=5)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass(tmp_path, PASSPHRASE)),
               "SSH_ASKPASS_REQUIRE": "force"}
        subprocess.run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        (tmp_path / "passphrase").unlink()  # from here on only the agent can sign
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.delenv("SSH_ASKPASS", raising=False)
        signature = signing.sign(b"payload", key.with_suffix(".pub"), NS)
        assert signing.verify(b"payload", signature, [key.with_suffix(".pub")], NS) == \
            fingerprint_by_ssh_keygen(key.with_suffix(".pub"))
        # a .pub whose key the agent does not hold (and no private key file beside it)
        stranger = make_key(tmp_path, "stranger")
        stranger.unlink()
        with pytest.raises(UserError, match="ssh-add"):
            signing.sign(b"payload", stranger.with_suffix(".pub"), NS)
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with pytest.raises(UserError, match="SSH_AUTH_SOCK is not set"):
            signing.sign(b"payload", key.with_suffix(".pub"), NS)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    out, err = capfd.readouterr()
    assert PASSPHRASE not in out + err


def test_load_trusted_errors_and_relative_paths(tmp_path):
    key = make_key(tmp_path, "release")
    assert signing.load_trusted(["release.pub"], base=tmp_path) == \
        [" ".join(key.with_suffix(".pub").read_text().split()[:2])]
    assert signing.load_trusted(None) == []
    with pytest.raises(UserError, match="trusted key file .*missing.pub not found"):
        signing.load_trusted([tmp_path / "missing.pub"])
    (tmp_path / "empty.pub").write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no OpenSSH public key"):
        signing.load_trusted(str(tmp_path / "empty.pub"))
    with pytest.raises(UserError, match="not a valid public key line"):
        signing.load_trusted("ssh-ed25519 AAAAC3NzaC1yc2E= forged")
    with pytest.raises(UserError, match="signing key .* not found"):
        signing.sign(b"x", tmp_path / "nokey", NS)
