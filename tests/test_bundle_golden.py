"""Golden bundles in tests/vectors/bundle: the format stays byte-for-byte stable.

Keys are derived from fixed seeds here (no secret is committed) and the
randomness is injected, so sealing the same records gives the same bytes.
Regenerate after an intended format change with GESTORE_REGEN_VECTORS=1.
"""
import hashlib
import io
import os
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gestore_retention.bundle import KeyRing, OpenedBundle, seal
from gestore_retention.bundle import age, minisign
from gestore_retention.bundle.format import parse_signature

VECTORS = Path(__file__).parent / "vectors" / "bundle"
METADATA = {"bundle": "golden-1", "subject": "demoapp.Organisation.1", "policy": "golden",
            "created_at": "2025-01-01T00:00:00+00:00", "schema": "0" * 16}
CASES = {
    "empty": [],
    "small": [{"model": "demoapp.User", "pk": 1, "name": "Zoë", "tags": ["a", "日本"]},
              {"model": "demoapp.Note", "pk": 2, "text": None}],
    "multichunk": [{"model": "demoapp.Blob", "pk": i, "data": hashlib.shake_256(str(i).encode()).hexdigest(512)}
                   for i in range(400)],
}


def _seed(label, n=32):
    return hashlib.shake_256(b"gestore-retention golden " + label).digest(n)


def golden_keyring():
    identity = age.X25519Identity(X25519PrivateKey.from_private_bytes(_seed(b"age")))
    signer = minisign.SecretKey(_seed(b"keyid", 8), Ed25519PrivateKey.from_private_bytes(_seed(b"ed25519")))
    return KeyRing(identities={1: identity}, primary_epoch=1, signing_key=signer)


def deterministic_random(name):
    stream = hashlib.shake_256(b"gestore-retention golden random " + name.encode()).digest(4096)
    position = 0

    def random(n):
        nonlocal position
        position += n
        return stream[position - n:position]
    return random


SIGNED_AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def sealed(name):
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, CASES[name], golden_keyring(), random=deterministic_random(name),
                        now=SIGNED_AT)
    return out.getvalue(), signature


if os.environ.get("GESTORE_REGEN_VECTORS"):  # pragma: no cover
    VECTORS.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        data, signature = sealed(case)
        (VECTORS / f"{case}.age").write_bytes(data)
        (VECTORS / f"{case}.age.minisig").write_bytes(signature)
    (VECTORS / "zlib-version").write_text(zlib.ZLIB_RUNTIME_VERSION + "\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_bundle_is_stable(case):
    # Compressed bytes depend on the zlib build; the read test below runs everywhere.
    if (VECTORS / "zlib-version").read_text().strip() != zlib.ZLIB_RUNTIME_VERSION:
        pytest.skip("vectors were compressed by another zlib version")
    data, signature = sealed(case)
    assert data == (VECTORS / f"{case}.age").read_bytes()
    assert signature == (VECTORS / f"{case}.age.minisig").read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_bundle_reads(case):
    path = VECTORS / f"{case}.age"
    label = str(path)
    signature = parse_signature(label, (VECTORS / f"{case}.age.minisig").read_bytes())
    with OpenedBundle(label, lambda: open(path, "rb"), signature, golden_keyring()) as bundle:
        assert bundle.metadata == METADATA
        assert list(bundle.records()) == CASES[case]
        assert bundle.manifest["records"] == len(CASES[case])


def test_golden_multichunk_has_several_chunks():
    assert (VECTORS / "multichunk.age").stat().st_size > 3 * age.ENC_CHUNK_SIZE


def test_golden_signature_carries_the_seal_entry():
    signature = parse_signature("small", (VECTORS / "small.age.minisig").read_bytes())
    with OpenedBundle("small", lambda: open(VECTORS / "small.age", "rb"), signature, golden_keyring()) as bundle:
        assert bundle.seal == {"epoch": 1, "recipients": [str(golden_keyring().recipients()[0])],
                               "signed_at": SIGNED_AT.isoformat()}
        assert bundle.signed_at == SIGNED_AT and bundle.epoch == 1


def test_signature_without_seal_entry_still_reads():
    # Bundles signed before the "seal" entry existed: the trusted comment is the metadata alone.
    path = VECTORS / "small.age"
    signature = parse_signature("small", (VECTORS / "small-noseal.age.minisig").read_bytes())
    assert "seal" not in signature.trusted_comment
    with OpenedBundle("small", lambda: open(path, "rb"), signature, golden_keyring()) as bundle:
        assert bundle.metadata == METADATA and bundle.seal == {}
        assert list(bundle.records()) == CASES["small"]
