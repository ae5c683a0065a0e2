"""How the image was made: an in-toto Statement v1 with a SLSA provenance v1 predicate, in a
DSSE envelope signed with SSHSIG (core/signing.py).

buildType is BUILD_TYPE, documented in docs/release.md#buildtype-v1: externalParameters hold
the recipe (name, and the sha256 of its canonical JSON as the manifest records it) and the
steps; resolvedDependencies every input with a digest (SDK, driver, patches, rootfs overlays,
base and builder images, the kernel tree's commit); runDetails the tool's version, the build's
start and end, and the manifest as a byproduct.

A DSSE signature's `sig` is the base64 of the armored SSHSIG text of PAE(payloadType, payload),
so `base64 -d` gives a file that `ssh-keygen -Y verify` takes as it is.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from rk3576_build.core import signing
from rk3576_build.core.signing import SignatureError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://rk3576-build.invalid/docs/release.md#buildtype-v1"
BUILDER_ID = "https://rk3576-build.invalid/docs/release.md#builder-v1"


def canonical_json(value) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes a digest of a JSON value is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: `DSSEv1 LEN(type) type LEN(body) body`."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _parse_time(value) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if ":" in digest else digest


def resolved_dependencies(manifest: Mapping, *, kernel_commit: str | None = None,
                          base_image: str | None = None, base_image_id: str | None = None) -> list[dict]:
    """SLSA ResourceDescriptors of every input the manifest records with a digest."""
    deps = []
    for item in manifest.get("inputs", []):
        name = str(item.get("name", ""))
        if name == "builder":
            descriptor = {"name": "builder-image", "uri": f"docker-image:{item.get('image', '')}",
                          "digest": {"sha256": _hex(str(item.get("image_id", "")))},
                          "annotations": {"config_hash": item.get("config_hash", "")}}
        elif item.get("sha256"):
            descriptor = {"name": name, "digest": {"sha256": item["sha256"]}}
            if item.get("url"):
                descriptor["uri"] = item["url"]
            notes = {k: str(item[k]) for k in ("version", "date", "commit", "kernel_version", "size") if k in item}
            if notes:
                descriptor["annotations"] = notes
        else:
            continue
        deps.append(descriptor)
    base = base_image or (manifest.get("recipe", {}).get("builder", {}) or {}).get("base")
    if base:
        descriptor = {"name": "base-image", "uri": f"docker-image:{base}"}
        if base_image_id:
            descriptor["digest"] = {"sha256": _hex(base_image_id)}
        deps.append(descriptor)
    if kernel_commit:
        deps.append({"name": "kernel-tree", "digest": {"gitCommit": kernel_commit}})
    return deps


def statement(manifest: Mapping, subjects: Sequence[tuple[str, str]], *, manifest_sha256: str,
              tool_version: str, started=None, finished=None, kernel_commit: str | None = None,
              base_image_id: str | None = None) -> dict:
    """The in-toto statement for `subjects` ((file name, sha256) of what the release ships).

    `started`/`finished` default to the manifest's `created` minus the steps' durations, and
    `created` itself.
    """
    recipe = dict(manifest.get("recipe", {}))
    steps = list(manifest.get("steps", []))
    end = _parse_time(finished or manifest.get("created") or datetime.datetime.now(datetime.UTC))
    begin = _parse_time(started) if started else end - datetime.timedelta(
        seconds=sum(float(step.get("duration") or 0) for step in steps))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": {"name": recipe.get("name", ""),
                               "digest": {"sha256": hashlib.sha256(canonical_json(recipe)).hexdigest()}},
                    "steps": [{key: step.get(key) for key in ("name", "target", "command") if step.get(key)}
                              for step in steps],
                },
                "resolvedDependencies": resolved_dependencies(manifest, kernel_commit=kernel_commit,
                                                              base_image_id=base_image_id),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"rk3576-build": tool_version}},
                "metadata": {"invocationId": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                            f"{BUILDER_ID}/{manifest_sha256}")),
                             "startedOn": _rfc3339(begin), "finishedOn": _rfc3339(end)},
                "byproducts": [{"name": "manifest.json", "digest": {"sha256": manifest_sha256},
                                "mediaType": "application/json"}],
            },
        },
    }


def envelope(statement_: Mapping, key: Path, namespace: str) -> dict:
    """The statement in a DSSE envelope signed with `key` (see core.signing.sign)."""
    payload = canonical_json(statement_)
    armored = signing.sign(pae(PAYLOAD_TYPE, payload), key, namespace)
    keyid = signing.fingerprint(signing.parse_signature(armored)["key_blob"])
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": keyid, "sig": base64.b64encode(armored).decode()}]}


def write_envelope(path: Path, envelope_: Mapping) -> Path:
    """One DSSE envelope as a line of JSON (the `.intoto.jsonl` convention)."""
    path = Path(path)
    path.write_text(json.dumps(envelope_, sort_keys=True, separators=(",", ":")) + "\n")
    return path


def verify_envelope(data: bytes, trusted, namespace: str, label: str = "provenance") -> tuple[dict, str]:
    """The statement of a DSSE envelope (`.intoto.jsonl`: its first line) and the fingerprint of
    the trusted key that signed it; SignatureError otherwise."""
    try:
        env = json.loads(data.decode().strip().splitlines()[0])
        payload = base64.b64decode(env["payload"], validate=True)
        signatures = env.get("signatures") or []
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise SignatureError(f"{label}: not a DSSE envelope") from None
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise SignatureError(f"{label}: payloadType is {env.get('payloadType')!r}, expected {PAYLOAD_TYPE!r}")
    if not signatures:
        raise SignatureError(f"{label}: unsigned (the envelope has no signatures)")
    problems = []
    for entry in signatures:
        try:
            armored = base64.b64decode(str(entry.get("sig", "")), validate=True)
            signer = signing.verify(pae(PAYLOAD_TYPE, payload), armored, trusted, namespace, label=label)
        except SignatureError as exc:
            problems.append(str(exc))
            continue
        except ValueError:
            problems.append(f"{label}: a signature is not base64")
            continue
        try:
            body = json.loads(payload)
        except ValueError:
            raise SignatureError(f"{label}: the signed payload is not JSON") from None
        if body.get("_type") != STATEMENT_TYPE:
            raise SignatureError(f"{label}: the payload is not an in-toto Statement v1")
        return body, signer
    raise SignatureError(problems[0] if len(problems) == 1 else "; ".join(problems))
