"""The tamper and fault suite of issue 5 (item 6): one test per fault.

Each fault must give one BundleError whose one-line message names the bundle
and the failed check, must never let the reader confirm the bundle (no
manifest, so a restore commits nothing), and must keep memory bounded
(tracemalloc peak). test_faulty_bundles_restore_nothing then feeds every
faulty file to the real restore (recovery.restore_bundle) and checks that
no table changed.
"""
import hashlib
import io
import json
import random
import re
import tracemalloc
import zlib
from datetime import datetime, timezone

import pytest

from gestore_retention.bundle import KeyRing, Limits, OpenedBundle, generate_keys, seal
from gestore_retention.bundle import age, minisign
from gestore_retention.bundle.format import parse_signature
from gestore_retention.errors import BundleError

METADATA = {"bundle": "b-1", "subject": "demoapp.Organisation.7", "policy": "churned",
            "created_at": "2025-01-01T00:00:00Z"}
MB = 1024 * 1024
PEAK_LIMIT = 3 * MB  # bundles here are ~0.4 MB; the reader holds a chunk, a line, a 1 MiB read buffer


# -- helpers -----------------------------------------------------------------------


def ring_pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    generate_keys(directory)
    return KeyRing.load(directory)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return ring_pair(tmp_path_factory)


@pytest.fixture(scope="module")
def other_ring(tmp_path_factory):
    return ring_pair(tmp_path_factory)


def synthetic_records():
    rng = random.Random(5)
    return [{"model": f"demoapp.M{i % 3}", "pk": i, "blob": rng.randbytes(3000).hex()} for i in range(120)]


def seal_bytes(ring, records, metadata=METADATA):
    out = io.BytesIO()
    signature, _ = seal(out, metadata, records, ring)
    return out.getvalue(), signature


def resign(data, ring, signature=None, comment=None):
    """Sign changed bytes again with the ring's own key, to reach the layers under the signature."""
    if comment is None:
        comment = minisign.Signature.parse(signature).trusted_comment
    digest = minisign.prehash()
    digest.update(data)
    return minisign.sign(ring.signing_key, digest.finalize(), trusted_comment=comment).encode()


def forge(ring, payload, metadata=METADATA):
    """Encrypt an arbitrary (already compressed) payload, signed by `ring`: a validly signed lie."""
    out = io.BytesIO()
    with age.encrypt(out, ring.recipients()) as enc:
        for i in range(0, len(payload), MB):
            enc.write(payload[i:i + MB])
    data = out.getvalue()
    comment = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
    return data, resign(data, ring, comment=comment)


def jsonl(*values):
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


PREAMBLE = {"format": "gestore-retention/1", "metadata": METADATA}


def header_end(data):
    return data.index(b"\n", data.index(b"\n--- ") + 1) + 1


def chunk_offsets(data):
    start = header_end(data) + age.NONCE_SIZE
    return list(range(start, len(data), age.ENC_CHUNK_SIZE))


def flip(data, index):
    data = bytearray(data)
    data[index] ^= 0x10
    return bytes(data)


def flip_b64(data, index):
    """Change one base64 character of a header line into another valid one (a flipped bit in the value)."""
    data = bytearray(data)
    data[index] = ord("A") if data[index] != ord("A") else ord("B")
    return bytes(data)


# -- the faults: name -> builder(base) returning (data, signature, reading ring, limits) -------------


class Base:
    def __init__(self, ring, other_ring, records):
        self.ring, self.other_ring, self.records = ring, other_ring, records
        self.data, self.signature = seal_bytes(ring, records)
        assert len(chunk_offsets(self.data)) >= 4

    def signed(self, data):
        return data, resign(data, self.ring, self.signature), self.ring, Limits()

    def with_ring(self, ring, data=None, signature=None):
        return (self.data if data is None else data), (signature or self.signature), ring, Limits()


def _flip_chunk(which):
    def build(b):
        offsets = chunk_offsets(b.data)
        index = {"first": 0, "middle": len(offsets) // 2, "last": len(offsets) - 1}[which]
        return b.signed(flip(b.data, offsets[index] + 77))
    return build


def _spliced(b):
    # Chunk 1 from another bundle of the same records for the same recipients: another file key.
    other, _ = seal_bytes(b.ring, b.records)
    o, c = chunk_offsets(other), chunk_offsets(b.data)
    return b.signed(b.data[:c[1]] + other[o[1]:o[2]] + b.data[c[2]:])


def _spliced_same_file(b):
    c = chunk_offsets(b.data)
    return b.signed(b.data[:c[1]] + b.data[c[2]:c[3]] + b.data[c[2]:])  # chunk 2 twice, chunk 1 gone


def _swapped(b):
    c = chunk_offsets(b.data)
    return b.signed(b.data[:c[1]] + b.data[c[2]:c[3]] + b.data[c[1]:c[2]] + b.data[c[3]:])


def _flip_signature(part):
    def build(b):
        sig = minisign.Signature.parse(b.signature)
        if part == "file":
            sig = minisign.Signature(sig.algorithm, sig.key_id, flip(sig.signature, 9), sig.untrusted_comment,
                                     sig.trusted_comment, sig.global_signature)
        else:
            sig = minisign.Signature(sig.algorithm, sig.key_id, sig.signature, sig.untrusted_comment,
                                     sig.trusted_comment, flip(sig.global_signature, 9))
        return b.with_ring(b.ring, signature=sig.encode())
    return build


def _flip_signature_file_bytes(b):
    text = bytearray(b.signature)
    line = text.index(b"\n") + 40  # inside the base64 of the Ed25519 signature (after "ED" and the key id)
    text[line] = ord("A") if text[line] != ord("A") else ord("B")
    return b.with_ring(b.ring, signature=bytes(text))


def _untrusted(b):
    stranger = KeyRing(identities=b.ring.identities, primary_epoch=b.ring.primary_epoch,
                       trusted=[b.other_ring.signing_key.public_key])
    return b.with_ring(stranger)


def _impostor(b):
    # The trusted key id, another key: a forger who copies our key id.
    impostor = minisign.SecretKey(b.ring.signing_key.key_id, b.other_ring.signing_key.key)
    digest = minisign.prehash()
    digest.update(b.data)
    comment = minisign.Signature.parse(b.signature).trusted_comment
    return b.with_ring(b.ring, signature=minisign.sign(impostor, digest.finalize(), trusted_comment=comment).encode())


def _revoked(b):
    ring = KeyRing(identities=b.ring.identities, primary_epoch=b.ring.primary_epoch, trusted=b.ring.trusted.values(),
                   revoked={b.ring.signing_key.key_id: {"revoked_at": "2025-01-02T00:00:00+00:00",
                                                        "reason": "key leaked"}})
    return b.with_ring(ring)


def _expired(b):
    window = (None, datetime(2000, 1, 1, tzinfo=timezone.utc))
    ring = KeyRing(identities=b.ring.identities, primary_epoch=b.ring.primary_epoch, trusted=b.ring.trusted.values(),
                   windows={b.ring.signing_key.key_id: window})
    return b.with_ring(ring)


def _edited_comment(b):
    return b.with_ring(b.ring, signature=b.signature.replace(b'"policy":"churned"', b'"policy":"kept"'))


def _relabelled(b):
    # Properly signed, but the signed metadata names another subject than the sealed preamble.
    trusted = json.loads(minisign.Signature.parse(b.signature).trusted_comment)
    trusted["subject"] = "demoapp.Organisation.8"
    comment = json.dumps(trusted, separators=(",", ":"), sort_keys=True)
    return b.with_ring(b.ring, signature=resign(b.data, b.ring, comment=comment))


def _wrong_key(b):
    ring = KeyRing(identities=b.other_ring.identities, primary_epoch=b.other_ring.primary_epoch,
                   trusted=b.ring.trusted.values())
    return b.with_ring(ring)


def _bomb_line(b):
    # 256 MiB of zeros on one line compress to ~250 KB: stopped at the 16 MiB line limit.
    comp = zlib.compressobj(9)
    parts = [comp.compress(jsonl(PREAMBLE) + b'{"model":"a.B","x":"')]
    block = b"0" * MB
    parts += [comp.compress(block) for _ in range(256)]
    payload = b"".join(parts) + comp.flush()
    data, signature = forge(b.ring, payload)
    return data, signature, b.ring, Limits()


def _bomb_total(b):
    # Many valid lines: stopped by the total decompressed-size limit.
    body = jsonl(PREAMBLE) + jsonl({"model": "a.B", "x": "0" * 1000}) * 20_000
    data, signature = forge(b.ring, zlib.compress(body, 9))
    return data, signature, b.ring, Limits(max_decompressed=4 * MB)


def _deep_json(b):
    body = jsonl(PREAMBLE) + b'{"model":"a.B","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    data, signature = forge(b.ring, zlib.compress(body))
    return data, signature, b.ring, Limits()


def _huge_number(b):
    body = jsonl(PREAMBLE) + b'{"model":"a.B","x":' + b"7" * 100_000 + b"}\n"
    data, signature = forge(b.ring, zlib.compress(body))
    return data, signature, b.ring, Limits()


def _huge_float(b):
    body = jsonl(PREAMBLE) + b'{"model":"a.B","x":1.' + b"5" * 5000 + b"e3}\n"
    data, signature = forge(b.ring, zlib.compress(body))
    return data, signature, b.ring, Limits()


def _huge_line(b):
    body = jsonl(PREAMBLE) + jsonl({"model": "a.B", "x": "y" * (3 * MB)})
    data, signature = forge(b.ring, zlib.compress(body))
    return data, signature, b.ring, Limits(max_line=MB)


def _manifest_lies(b):
    body = jsonl(PREAMBLE, {"model": "a.B", "pk": 1})
    manifest = {"manifest": {"counts": {"a.B": 2}, "records": 2, "sha256": hashlib.sha256(body).hexdigest()}}
    data, signature = forge(b.ring, zlib.compress(body + jsonl(manifest)))
    return data, signature, b.ring, Limits()


FAULTS = {
    # name: (builder, expected message after "bundle <label>: ")
    "bit-flip-stanza-body": (lambda b: b.signed(flip_b64(b.data, b.data.index(b"\n", b.data.index(b"-> X25519")) + 5)),
                             r"the recipient stanza for key epoch 1 \(age1\w+\) does not unwrap .* damaged or forged"),
    "bit-flip-stanza-share": (lambda b: b.signed(flip_b64(b.data, b.data.index(b"-> X25519 ") + 14)),
                              r"the recipient stanza for key epoch 1 .* damaged or forged"),
    "bit-flip-header-version": (lambda b: b.signed(flip(b.data, 4)), "age header is invalid: unsupported version"),
    "bit-flip-header-mac": (lambda b: b.signed(flip_b64(b.data, b.data.index(b"\n--- ") + 7)),
                            "age header MAC does not verify"),
    "bit-flip-nonce": (lambda b: b.signed(flip(b.data, header_end(b.data) + 3)), "chunk 0 failed authentication"),
    "bit-flip-first-chunk": (_flip_chunk("first"), "chunk 0 failed authentication"),
    "bit-flip-middle-chunk": (_flip_chunk("middle"), r"chunk \d+ failed authentication"),
    "bit-flip-last-chunk": (_flip_chunk("last"), r"chunk \d+ failed authentication"),
    "bit-flip-unsigned": (lambda b: b.with_ring(b.ring, data=flip(b.data, len(b.data) // 2)),
                          "signature does not verify with any trusted key"),
    "bit-flip-signature": (_flip_signature("file"), "signature does not verify with any trusted key"),
    "bit-flip-comment-signature": (_flip_signature("global"), r"trusted comment does not verify \(it was edited\)"),
    "bit-flip-signature-file": (_flip_signature_file_bytes, "signature does not verify with any trusted key"),
    "last-chunk-dropped": (lambda b: b.signed(b.data[:chunk_offsets(b.data)[-1]]), "no final chunk after chunk"),
    "cut-mid-chunk": (lambda b: b.signed(b.data[:chunk_offsets(b.data)[2] + 999]), "chunk 2 failed authentication"),
    "empty-file": (lambda b: b.signed(b""), "age header is invalid: file is empty"),
    "header-only": (lambda b: b.signed(b.data[:header_end(b.data)]), "truncated before the payload nonce"),
    "header-and-nonce-only": (lambda b: b.signed(b.data[:header_end(b.data) + age.NONCE_SIZE]),
                              "payload has no chunks"),
    "swapped-chunks": (_swapped, "chunk 1 failed authentication"),
    "spliced-chunk-other-bundle": (_spliced, "chunk 1 failed authentication"),
    "spliced-chunk-same-bundle": (_spliced_same_file, "chunk 1 failed authentication"),
    "bytes-appended": (lambda b: b.signed(b.data + b"\x00" * 40), r"chunk \d+ failed authentication"),
    "wrong-key": (_wrong_key, r"encrypted for key epoch 1 \(age1\w+\), whose identity is not in the key ring"),
    "untrusted-signer": (_untrusted, r"signed by key [0-9A-F]{16}, which is not a trusted key"),
    "impostor-signer": (_impostor, "signature does not verify with any trusted key"),
    "revoked-signer": (_revoked, r"signing key [0-9A-F]{16} was revoked on 2025-01-02T00:00:00\+00:00: key leaked"),
    "expired-signer": (_expired, r"signing key [0-9A-F]{16} had expired at \S+ \(valid - \.\. 2000-01-01"),
    "edited-trusted-comment": (_edited_comment, r"trusted comment does not verify \(it was edited\)"),
    "relabelled-metadata": (_relabelled, "preamble metadata differs from the signed trusted comment"),
    "signed-bomb-one-line": (_bomb_line, "a line is longer than the limit of 16777216 bytes"),
    "signed-bomb-total-size": (_bomb_total, "decompressed size exceeds the limit of 4194304 bytes"),
    "deeply-nested-json": (_deep_json, "line 2 is nested deeper than 64"),
    "huge-json-integer": (_huge_number, "line 2: a number is longer than the limit of 1000 characters"),
    "huge-json-float": (_huge_float, "line 2: a number is longer than the limit of 1000 characters"),
    "huge-json-line": (_huge_line, "a line is longer than the limit of 1048576 bytes"),
    "manifest-lies": (_manifest_lies, r"manifest counts \{'a.B': 2\} do not match"),
}
PEAKS = {"signed-bomb-one-line": 24 * MB}  # 256 MiB on one line: held up to max_line (16 MiB), then refused


@pytest.fixture(scope="module")
def base(ring, other_ring):
    return Base(ring, other_ring, synthetic_records())


def open_and_read(label, data, signature, ring, limits):
    """Open and read to the end, as a restore does (records are counted, not kept); return the count."""
    released = 0
    bundle = None
    try:
        bundle = OpenedBundle(label, lambda: io.BytesIO(data), parse_signature(label, signature), ring, limits=limits)
        with bundle:
            for _ in bundle.records():
                released += 1
    finally:
        assert bundle is None or bundle.manifest is None, "a faulty bundle was confirmed"
    return released


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault(base, name):
    build, expected = FAULTS[name]
    data, signature, ring, limits = build(base)
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as info:
            open_and_read("mem.age", data, signature, ring, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith("bundle mem.age: ") and "\n" not in message, message
    assert re.search(expected, message), message
    assert peak < PEAKS.get(name, PEAK_LIMIT), f"{name}: peak {peak / MB:.1f} MiB"


def test_the_unfaulted_base_reads(base):
    with OpenedBundle("mem.age", lambda: io.BytesIO(base.data), parse_signature("mem.age", base.signature),
                      base.ring) as bundle:
        assert list(bundle.records()) == base.records and bundle.manifest["records"] == len(base.records)


# -- end to end: a restore of each faulty file changes no table -------------------------------


@pytest.mark.django_db(transaction=True)
def test_faulty_bundles_restore_nothing(retention_env, tmp_path, other_ring):
    from demoapp import models as m
    from gestore_retention.graph.walk import walk
    from gestore_retention.recovery import restore_bundle
    from gestore_retention.records import Export
    from tests.factories import tenant
    from tests.snapshot import diff, snapshot

    acme = tenant("acme", files=False)
    ring = KeyRing.from_settings()
    records = list(Export(walk([acme])).records())
    good = Base.__new__(Base)
    good.ring, good.other_ring, good.records = ring, other_ring, records
    good.data, good.signature = seal_bytes(ring, records)
    m.Organisation.objects.filter(pk=acme.pk).delete()
    before = snapshot(app_labels=("demoapp",))
    checked = 0
    for name, (build, _) in FAULTS.items():
        try:
            data, signature, reading_ring, limits = build(good)
        except (IndexError, AssertionError):
            continue  # a chunk-position fault needs more chunks than this tenant's bundle has
        path = tmp_path / f"{name}.age"
        path.write_bytes(data)
        path.with_name(path.name + ".minisig").write_bytes(signature)
        with pytest.raises(BundleError) as info:
            restore_bundle(str(path), keyring=reading_ring)
        # Forged plaintexts hold records of a model 'a.B' the restore refuses first; the rest name the file.
        assert name in str(info.value) or "unknown model 'a.B'" in str(info.value), str(info.value)
        assert diff(before, snapshot(app_labels=("demoapp",))) == [], f"{name} changed the database"
        checked += 1
    assert checked >= 25
    # The control: the good bundle restores.
    path = tmp_path / "good.age"
    path.write_bytes(good.data)
    path.with_name("good.age.minisig").write_bytes(good.signature)
    restore_bundle(str(path), keyring=ring)
    assert m.Organisation.objects.filter(pk=acme.pk).exists()
