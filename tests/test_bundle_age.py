"""The age layer against the C2SP CCTV vectors and against pyrage."""
import hashlib
import io
import zlib
from pathlib import Path

import pytest

from gestore_retention.bundle import age

# C2SP CCTV age vectors (BSD licence in the directory), copied from the
# project's shared vectors so the suite runs from a plain checkout.
VECTORS = Path(__file__).parent / "vectors" / "age"

# Features this reader does not implement; the vectors are skipped, and why.
UNSUPPORTED = {
    "armor": "ASCII armor is not supported (bundles are binary)",
    "scrypt": "scrypt passphrase recipients are not supported",
    "hybrid": "hybrid post-quantum recipients are not supported",
}
OUTCOME = {
    "header failure": age.HeaderError,
    "HMAC failure": age.HeaderMacError,
    "no match": age.NoIdentityMatch,
    "payload failure": age.PayloadError,
}


def _load(path):
    head, _, body = path.read_bytes().partition(b"\n\n")
    meta = {"identity": []}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        if key == "identity":
            meta["identity"].append(value)
        else:
            meta[key] = value
    if meta.get("compressed") == "zlib":
        body = zlib.decompress(body)
    return meta, body


def _vector_params():
    params = []
    for path in sorted(VECTORS.glob("*")) if VECTORS.is_dir() else []:
        if path.name == "LICENSE":
            continue
        reason = next((why for prefix, why in UNSUPPORTED.items() if path.name.startswith(prefix)), None)
        if reason is None:
            meta, _ = _load(path)
            if "passphrase" in meta or "armored" in meta:
                reason = "passphrase/armor vector"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


@pytest.mark.parametrize("path", _vector_params())
def test_cctv_vector(path):
    meta, body = _load(path)
    identities = [age.X25519Identity.from_string(text) for text in meta["identity"]]
    released = hashlib.sha256()
    expect = meta["expect"]
    if expect == "success":
        for chunk in age.decrypt(io.BytesIO(body), identities).chunks():
            released.update(chunk)
        assert released.hexdigest() == meta["payload"]
        return
    with pytest.raises(OUTCOME[expect]):
        for chunk in age.decrypt(io.BytesIO(body), identities).chunks():
            released.update(chunk)
    if expect == "payload failure":
        assert released.hexdigest() == meta["payload"]


def test_cctv_vectors_present():
    assert VECTORS.is_dir() and len(_vector_params()) > 100
