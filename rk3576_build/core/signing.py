"""Detached OpenSSH signatures (SSHSIG) made and checked with `ssh-keygen -Y`.

Every release engineer already holds an OpenSSH key, so releases and cache entries are
signed offline with it. A key's passphrase comes from ssh-agent (give the `.pub` file of a
key loaded with `ssh-add`) or from the program named by SSH_ASKPASS (then run headless:
SSH_ASKPASS_REQUIRE defaults to `force`), or from the terminal; it never passes through
this process, so it cannot reach a log. A namespace binds a signature to one purpose: a
cache-entry signature cannot pass for a release signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from rk3576_build.core.errors import UserError

ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
MAX_SIGNATURE = 64 * 1024
KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_KEY_RE = re.compile(r"(?:^|\s)(" + "|".join(re.escape(t) for t in KEY_TYPES) + r")\s+([A-Za-z0-9+/]+={0,2})(?=\s|$)")
_PRINCIPAL = "rk3576-build-signer"


class SignatureError(UserError):
    """A signature that does not prove what it should: unsigned, untrusted key, bad signature,
    wrong namespace. Exits 1 like any failed check."""

    exit_code = 1


def _ssh_keygen() -> str:
    tool = shutil.which("ssh-keygen")
    if not tool:
        raise UserError("ssh-keygen not found: install OpenSSH (Debian: apt-get install openssh-client)")
    return tool


def _signing_env() -> dict:
    """The environment for `ssh-keygen -Y sign`: SSH_ASKPASS works without a display or tty."""
    env = dict(os.environ)
    if env.get("SSH_ASKPASS") and not env.get("SSH_ASKPASS_REQUIRE"):
        env["SSH_ASKPASS_REQUIRE"] = "force"
    return env


def _last_line(text: bytes) -> str:
    lines = [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _sign_stream(stdin: IO[bytes] | int, data: bytes | None, key: Path, namespace: str) -> bytes:
    key = Path(key)
    if not key.is_file():
        raise UserError(f"signing key {key} not found: give a private key file, or the .pub of a key in ssh-agent")
    if not namespace:
        raise UserError("a signature needs a namespace")
    if key.suffix == ".pub" and not os.environ.get("SSH_AUTH_SOCK"):
        raise UserError(f"signing key {key} is a public key and SSH_AUTH_SOCK is not set: "
                        "load the private key into ssh-agent (ssh-add) or give the private key file")
    result = subprocess.run([_ssh_keygen(), "-Y", "sign", "-f", str(key), "-n", namespace],
                            input=data, stdin=None if data is not None else stdin,
                            capture_output=True, env=_signing_env())
    if result.returncode != 0 or ARMOR_BEGIN.encode() not in result.stdout:
        reason = _last_line(result.stderr)
        hint = ""
        if "passphrase" in reason.lower():
            hint = "; the key is encrypted: load it into ssh-agent (ssh-add) and give its .pub, or set SSH_ASKPASS"
        elif key.suffix == ".pub":
            hint = "; is the key loaded into ssh-agent (ssh-add -l)?"
        raise UserError(f"cannot sign with {key}: {reason}{hint}")
    return result.stdout


def sign(data: bytes, key: Path, namespace: str) -> bytes:
    """An armored SSHSIG signature of `data` by `key` (private key file, or a .pub whose key
    is in ssh-agent) for `namespace`."""
    return _sign_stream(subprocess.DEVNULL, bytes(data), key, namespace)


def sign_file(path: Path, key: Path, namespace: str) -> Path:
    """Sign a file (streamed, any size) and write the signature beside it as `path.sig`."""
    path = Path(path)
    with path.open("rb") as fh:
        signature = _sign_stream(fh, None, key, namespace)
    sig_path = path.with_name(path.name + ".sig")
    tmp = sig_path.with_name(f".{sig_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(signature)
    os.replace(tmp, sig_path)
    return sig_path


def _b64_key(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def fingerprint(key_blob: bytes) -> str:
    """The key's SHA256 fingerprint as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", blob[offset:offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated")
    return blob[offset + 4:end], end


def _key_blob(key_type: str, b64: str) -> bytes | None:
    """The decoded key if `b64` really is a `key_type` public key."""
    try:
        blob = base64.b64decode(b64, validate=True)
        name, _ = _read_string(blob, 0)
    except (binascii.Error, ValueError):
        return None
    return blob if name.decode(errors="replace") == key_type else None


def parse_signature(signature: bytes) -> dict:
    """The signer's public key (`key_blob`, `key_type`), `namespace` and `hash` of an armored
    SSHSIG signature; ValueError when it is not one."""
    text = signature.decode("ascii", errors="replace").strip()
    if not text.startswith(ARMOR_BEGIN) or ARMOR_END not in text:
        raise ValueError("not an armored SSH signature")
    body = text[len(ARMOR_BEGIN):text.index(ARMOR_END)]
    try:
        blob = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error:
        raise ValueError("damaged armor") from None
    if not blob.startswith(MAGIC) or len(blob) < 10:
        raise ValueError("not an SSHSIG blob")
    (version,) = struct.unpack(">I", blob[6:10])
    if version != 1:
        raise ValueError(f"unsupported SSHSIG version {version}")
    key_blob, offset = _read_string(blob, 10)
    namespace, offset = _read_string(blob, offset)
    _reserved, offset = _read_string(blob, offset)
    hash_alg, offset = _read_string(blob, offset)
    key_type, _ = _read_string(key_blob, 0)
    return {"key_blob": key_blob, "key_type": key_type.decode(errors="replace"),
            "namespace": namespace.decode(errors="replace"), "hash": hash_alg.decode(errors="replace")}


def keys_in_text(text: str) -> list[str]:
    """Public keys (`TYPE BASE64`) found in .pub, authorized_keys or allowed_signers text;
    options, principals and comments around them are dropped."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _KEY_RE.search(line)
        if match and _key_blob(match.group(1), match.group(2)) is not None:
            keys.append(f"{match.group(1)} {match.group(2)}")
    return keys


def load_trusted(spec, base: Path | None = None) -> list[str]:
    """Trusted public keys from `spec`: a key line, a path to a .pub/authorized_keys/
    allowed_signers file (relative paths resolve against `base`), or a list of these."""
    if spec is None:
        return []
    items: Iterable = [spec] if isinstance(spec, (str, Path)) else spec
    keys: list[str] = []
    for item in items:
        if isinstance(item, str) and _KEY_RE.search(item):
            found = keys_in_text(item)
            if not found:
                raise UserError(f"trusted key {item[:40]}...: not a valid public key line")
        else:
            path = Path(item).expanduser()
            if base is not None and not path.is_absolute():
                path = Path(base) / path
            if not path.is_file():
                raise UserError(f"trusted key file {path} not found: give a .pub file or a public key line")
            found = keys_in_text(path.read_text(errors="replace"))
            if not found:
                raise UserError(f"trusted key file {path} holds no OpenSSH public key")
        keys.extend(key for key in found if key not in keys)
    return keys


def _verify(stdin: IO[bytes] | None, data: bytes | None, signature: bytes | None, trusted,
            namespace: str, label: str) -> str:
    if not signature or not signature.strip():
        raise SignatureError(f"{label}: unsigned (no signature)")
    if len(signature) > MAX_SIGNATURE:
        raise SignatureError(f"{label}: the signature is not an SSH signature ({len(signature)} bytes)")
    try:
        parsed = parse_signature(signature)
    except ValueError as exc:
        raise SignatureError(f"{label}: bad signature ({exc})") from None
    if parsed["namespace"] != namespace:
        raise SignatureError(f"{label}: wrong namespace: signed for {parsed['namespace']!r}, expected {namespace!r}")
    keys = load_trusted(trusted)
    if not keys:
        raise SignatureError(f"{label}: no trusted keys given to check the signature against")
    signer = fingerprint(parsed["key_blob"])
    signer_key = f"{parsed['key_type']} {_b64_key(parsed['key_blob'])}"
    if signer_key not in keys:
        raise SignatureError(f"{label}: signed by an untrusted key {signer}: add its .pub to the trusted keys "
                             "if you trust it")
    with tempfile.TemporaryDirectory(prefix="rk3576-sig-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text(f'{_PRINCIPAL} namespaces="{namespace}" {signer_key}\n')
        sig_file = Path(tmp) / "signature"
        sig_file.write_bytes(signature)
        result = subprocess.run([_ssh_keygen(), "-Y", "verify", "-f", str(allowed), "-I", _PRINCIPAL,
                                 "-n", namespace, "-s", str(sig_file)],
                                input=data, stdin=None if data is not None else stdin, capture_output=True)
    if result.returncode != 0:
        raise SignatureError(f"{label}: bad signature by {signer}: the signed content changed or the "
                             "signature is damaged")
    return signer


def verify(data: bytes, signature: bytes, trusted: Sequence[str] | str | Path, namespace: str,
           label: str = "data") -> str:
    """Check an armored signature of `data` made for `namespace` by one of the `trusted` keys
    (see load_trusted); the signer's fingerprint (`SHA256:...`), or SignatureError naming `label`."""
    return _verify(None, bytes(data), signature, trusted, namespace, label)


def verify_file(path: Path, trusted: Sequence[str] | str | Path, namespace: str, sig_path: Path | None = None,
                label: str | None = None) -> str:
    """verify() for a file and its `path.sig` (or `sig_path`), streaming the file."""
    path = Path(path)
    sig_path = Path(sig_path) if sig_path else path.with_name(path.name + ".sig")
    label = label or path.name
    if not sig_path.is_file():
        raise SignatureError(f"{label}: unsigned ({sig_path.name} is missing)")
    with sig_path.open("rb") as fh:
        signature = fh.read(MAX_SIGNATURE + 1)
    with path.open("rb") as fh:
        return _verify(fh, None, signature, trusted, namespace, label)
