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


# -- our own round trips ---------------------------------------------------


def _encrypt(plaintext, recipients, **kw):
    out = io.BytesIO()
    with age.encrypt(out, recipients, **kw) as enc:
        enc.write(plaintext)
    return out.getvalue()


def _decrypt(data, identities):
    return b"".join(age.decrypt(io.BytesIO(data), identities).chunks())


@pytest.mark.parametrize("size", [0, 1, age.CHUNK_SIZE - 1, age.CHUNK_SIZE, age.CHUNK_SIZE + 1,
                                  2 * age.CHUNK_SIZE, 300 * 1024])
def test_round_trip_sizes(size):
    identity = age.X25519Identity.generate()
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = _encrypt(plaintext, [identity.recipient])
    chunks = max(1, -(-size // age.CHUNK_SIZE))  # a full final chunk, never an empty extra one
    header_end = data.index(b"\n", data.index(b"\n--- ") + 1) + 1
    assert len(data) == header_end + age.NONCE_SIZE + size + chunks * age.TAG_SIZE
    assert _decrypt(data, [identity]) == plaintext


def test_several_recipients_and_header_layout():
    one, two = age.X25519Identity.generate(), age.X25519Identity.generate()
    data = _encrypt(b"hello", [one.recipient, two.recipient])
    assert _decrypt(data, [two]) == b"hello"
    lines = data.split(b"\n")
    assert lines[0] == b"age-encryption.org/v1" and lines[1].startswith(b"-> X25519 ")
    assert len(lines[2]) == 43 and lines[5].startswith(b"--- ") and len(lines[5]) == 47  # unpadded base64
    with pytest.raises(age.NoIdentityMatch):
        _decrypt(data, [age.X25519Identity.generate()])


def test_deterministic_with_injected_randomness():
    identity = age.X25519Identity.from_string(
        "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0")

    def fixed(n):
        return bytes(range(n))

    assert _encrypt(b"x", [identity.recipient], random=fixed) == _encrypt(b"x", [identity.recipient], random=fixed)


def test_stanza_body_wrapping():
    for size in (0, 47, 48, 49, 96):
        text = age.Stanza("t", ("a",), bytes(size)).encode().decode()
        body = text.split("\n")[1:-1]
        assert all(len(line) == 64 for line in body[:-1]) and len(body[-1]) < 64


def test_bech32_keys():
    identity = age.X25519Identity.generate()
    text = identity.to_string()
    assert text.startswith("AGE-SECRET-KEY-1") and text == text.upper()
    assert str(identity.recipient).startswith("age1")
    assert age.X25519Identity.from_string(text).recipient == identity.recipient
    assert age.X25519Recipient.from_string(str(identity.recipient)) == identity.recipient
    for bad in (text.lower(), text[:-1] + ("Q" if text[-1] != "Q" else "P"), str(identity.recipient).upper()):
        with pytest.raises(ValueError):
            (age.X25519Identity if bad.upper().startswith("AGE-SECRET") else age.X25519Recipient).from_string(bad)


# -- interoperability with pyrage (rage, the Rust implementation) ---------

try:  # a test-only dependency: pip install pyrage
    import pyrage
except ImportError:  # pragma: no cover
    pyrage = None
needs_pyrage = pytest.mark.skipif(pyrage is None, reason="pip install pyrage to run the interop tests")


@needs_pyrage
@pytest.mark.parametrize("size", [0, 5, age.CHUNK_SIZE, 300 * 1024])
def test_pyrage_decrypts_ours(size):
    identity = age.X25519Identity.generate()
    plaintext = bytes(i % 251 for i in range(size))
    data = _encrypt(plaintext, [identity.recipient])
    assert pyrage.decrypt(data, [pyrage.x25519.Identity.from_str(identity.to_string())]) == plaintext


@needs_pyrage
@pytest.mark.parametrize("size", [0, 5, age.CHUNK_SIZE, 300 * 1024])
def test_we_decrypt_pyrage(size):
    theirs = pyrage.x25519.Identity.generate()
    plaintext = bytes(i % 251 for i in range(size))
    data = pyrage.encrypt(plaintext, [theirs.to_public()])
    ours = age.X25519Identity.from_string(str(theirs))
    assert str(ours.recipient) == str(theirs.to_public())
    assert _decrypt(data, [ours]) == plaintext
