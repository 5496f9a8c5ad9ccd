"""Seal and open bundles in memory: round trips, tampering, reader limits."""
import io
import json
import random
import zlib

import pytest

from gestore_retention.bundle import KeyRing, Limits, OpenedBundle, generate_keys, seal
from gestore_retention.bundle import age, minisign
from gestore_retention.bundle.format import parse_signature
from gestore_retention.errors import BundleError

METADATA = {"bundle": "b-1", "subject": "demoapp.Organisation.7", "policy": "churned", "created_at": "2025-01-01T00:00:00Z"}


@pytest.fixture
def keyring(tmp_path):
    generate_keys(tmp_path / "keys")
    return KeyRing.load(tmp_path / "keys")


def sealed(keyring, records, metadata=METADATA):
    out = io.BytesIO()
    signature, counts = seal(out, metadata, records, keyring)
    return out.getvalue(), signature, counts


def open_bytes(data, signature, keyring, limits=Limits()):
    return OpenedBundle("mem.age", lambda: io.BytesIO(data), parse_signature("mem.age", signature), keyring,
                        limits=limits)


def read_all(data, signature, keyring, limits=Limits()):
    with open_bytes(data, signature, keyring, limits) as bundle:
        return bundle.metadata, list(bundle.records()), bundle.manifest


def resign(data, keyring, comment=None, signature=None):
    """Sign `data` again with the ring's key, so the layers under the signature get tested."""
    if comment is None:
        comment = minisign.Signature.parse(signature).trusted_comment
    digest = minisign.prehash()
    digest.update(data)
    return minisign.sign(keyring.signing_key, digest.finalize(), trusted_comment=comment).encode()


def forge(keyring, plaintext, metadata=METADATA, *, compress=True):
    """Seal arbitrary plaintext bytes the way seal() would, signed by the ring."""
    out = io.BytesIO()
    with age.encrypt(out, keyring.recipients()) as enc:
        enc.write(zlib.compress(plaintext) if compress else plaintext)
    data = out.getvalue()
    return data, resign(data, keyring, json.dumps(metadata, separators=(",", ":"), sort_keys=True))


def lines(*values):
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


def manifest_for(body, counts):
    import hashlib
    return {"manifest": {"counts": counts, "records": sum(counts.values()), "sha256": hashlib.sha256(body).hexdigest()}}


def big_records(total=300 * 1024):
    rng = random.Random(7)
    out, size = [], 0
    while size < total:
        blob = rng.randbytes(3000).hex()
        out.append({"model": f"demoapp.Model{len(out) % 3}", "pk": len(out), "blob": blob})
        size += len(blob)
    return out


def layout(data):
    """Return (header_end, [chunk offsets]) of an age file."""
    header_end = data.index(b"\n", data.index(b"\n--- ") + 1) + 1
    start = header_end + age.NONCE_SIZE
    return header_end, list(range(start, len(data), age.ENC_CHUNK_SIZE))


# -- round trips -----------------------------------------------------------


def test_round_trip_unicode(keyring):
    records = [{"model": "demoapp.User", "pk": 1, "name": "Zoë Ångström 日本語 🎉", "nested": {"a": [1, 2.5, None]}},
               {"model": "demoapp.Note", "pk": 2, "text": "line\nbreak \u2028 \x00"}]
    data, signature, counts = sealed(keyring, records, {**METADATA, "subject": "Zoë"})
    assert counts == {"demoapp.User": 1, "demoapp.Note": 1}
    metadata, got, manifest = read_all(data, signature, keyring)
    assert got == records
    assert metadata["subject"] == "Zoë"
    assert manifest["counts"] == counts and manifest["records"] == 2


def test_round_trip_empty(keyring):
    data, signature, counts = sealed(keyring, [])
    assert counts == {}
    metadata, got, manifest = read_all(data, signature, keyring)
    assert (metadata, got, manifest["records"]) == (METADATA, [], 0)


def test_round_trip_several_chunks(keyring):
    records = big_records()
    data, signature, counts = sealed(keyring, iter(records))
    assert len(layout(data)[1]) >= 3  # hex compresses about 2:1
    assert read_all(data, signature, keyring)[1] == records
    assert sum(counts.values()) == len(records)


def test_file_is_standard_age_and_minisign(keyring):
    data, signature, _ = sealed(keyring, [{"model": "a.B"}])
    assert data.startswith(b"age-encryption.org/v1\n-> X25519 ")
    text = signature.decode()
    assert text.splitlines()[2].startswith("trusted comment: {")
    trusted = json.loads(text.splitlines()[2][len("trusted comment: "):])
    seal_entry = trusted.pop("seal")
    assert trusted == METADATA  # the caller's metadata, plus the reserved "seal" entry
    assert seal_entry["epoch"] == 1 and seal_entry["recipients"] == [str(keyring.recipients()[0])]
    assert text.splitlines()[2] == "trusted comment: " + json.dumps(
        {**METADATA, "seal": seal_entry}, separators=(",", ":"), sort_keys=True)
    assert minisign.Signature.parse(signature).key_id_hex == keyring.key_id


def test_plaintext_layout(keyring):
    data, signature, _ = sealed(keyring, [{"model": "a.B", "pk": 1}])
    plain = b"".join(age.decrypt(io.BytesIO(data), keyring.decryption_identities()).chunks())
    first, record, last = zlib.decompress(plain).splitlines(keepends=True)
    assert json.loads(first) == {"format": "gestore-retention/1", "metadata": METADATA}
    assert json.loads(record) == {"model": "a.B", "pk": 1}
    assert json.loads(last) == manifest_for(first + record, {"a.B": 1})


def test_records_iterate_once(keyring):
    data, signature, _ = sealed(keyring, [{"model": "a.B"}])
    bundle = open_bytes(data, signature, keyring)
    list(bundle.records())
    with pytest.raises(BundleError, match="only once"):
        list(bundle.records())


def test_manifest_set_only_after_exhaustion(keyring):
    data, signature, _ = sealed(keyring, [{"model": "a.B"}, {"model": "a.B"}])
    bundle = open_bytes(data, signature, keyring)
    records = bundle.records()
    next(records)
    assert bundle.manifest is None
    list(records)
    assert bundle.manifest["records"] == 2


def test_seal_refuses_bad_records(keyring):
    with pytest.raises(BundleError, match="record 1 is not a dict"):
        sealed(keyring, [{"model": "a.B"}, {"pk": 1}])
    with pytest.raises(BundleError, match=r"record 0 \(a.B\) is not JSON-serializable"):
        sealed(keyring, [{"model": "a.B", "when": object()}])
    with pytest.raises(BundleError, match="metadata is not JSON"):
        sealed(keyring, [], {"x": object()})


# -- tampering: every one is a BundleError naming the file and the failure --


@pytest.fixture
def bundle(keyring):
    data, signature, _ = sealed(keyring, big_records())
    return bytearray(data), signature


def flip(data, index, bit=1):
    data = bytearray(data)
    data[index] ^= bit
    return bytes(data)


def flip_b64(data, index):
    """Change one base64 character of a header line into another valid one."""
    data = bytearray(data)
    data[index] = ord("A") if data[index] != ord("A") else ord("B")
    return bytes(data)


def expect(keyring, data, signature, message):
    with pytest.raises(BundleError, match=message) as info:
        read_all(bytes(data), signature, keyring)
    assert str(info.value).startswith("bundle mem.age: ")
    assert "\n" not in str(info.value)


def test_any_change_fails_the_signature_first(keyring, bundle):
    data, signature = bundle
    for index in (0, 30, layout(data)[0] - 3, len(data) // 2, len(data) - 1):
        expect(keyring, flip(data, index), signature, "signature does not verify with any trusted key")


def test_bit_flip_in_stanza(keyring, bundle):
    data, signature = bundle
    body_line = data.index(b"\n", data.index(b"-> X25519")) + 1
    tampered = flip_b64(data, body_line + 5)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature),
           r"recipient stanza for key epoch 1 \(age1\w+\) does not unwrap .*damaged or forged")


def test_bit_flip_in_stanza_share(keyring, bundle):
    data, signature = bundle
    tampered = flip_b64(data, data.index(b"-> X25519 ") + 12)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature),
           r"recipient stanza for key epoch 1 \(age1\w+\) does not unwrap .*damaged or forged")


def test_bit_flip_in_header_version(keyring, bundle):
    data, signature = bundle
    tampered = flip(data, 3)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "age header is invalid: unsupported version")


def test_bit_flip_in_header_mac(keyring, bundle):
    data, signature = bundle
    tampered = flip_b64(data, data.index(b"\n--- ") + 6)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "age header MAC does not verify")


def test_bit_flip_in_chunk(keyring, bundle):
    data, signature = bundle
    chunks = layout(data)[1]
    tampered = flip(data, chunks[1] + 100)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "chunk 1 failed authentication")


def test_bit_flip_in_nonce(keyring, bundle):
    data, signature = bundle
    tampered = flip(data, layout(data)[0] + 2)
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "chunk 0 failed authentication")


def test_bit_flip_in_signature(keyring, bundle):
    data, signature = bundle
    parsed = minisign.Signature.parse(signature)
    bad = minisign.Signature(parsed.algorithm, parsed.key_id, flip(parsed.signature, 10),
                             parsed.untrusted_comment, parsed.trusted_comment, parsed.global_signature)
    expect(keyring, data, bad.encode(), "signature does not verify with any trusted key")


def test_malformed_signature_file(keyring, bundle):
    data, signature = bundle
    expect(keyring, data, signature[:40], "signature file is malformed")
    expect(keyring, data, b"", "signature file is malformed")


def test_last_chunk_dropped(keyring, bundle):
    data, signature = bundle
    tampered = data[:layout(data)[1][-1]]
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "no final chunk")


def test_cut_mid_chunk(keyring, bundle):
    data, signature = bundle
    tampered = data[:layout(data)[1][1] + 1000]
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "chunk 1 failed authentication")


def test_empty_file(keyring, bundle):
    _, signature = bundle
    expect(keyring, b"", resign(b"", keyring, signature=signature), "age header is invalid: file is empty")
    expect(keyring, b"", signature, "signature does not verify")


def test_header_only_file(keyring, bundle):
    data, signature = bundle
    tampered = data[:layout(data)[0]]
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "truncated before the payload nonce")


def test_nonce_only_file(keyring, bundle):
    data, signature = bundle
    tampered = data[:layout(data)[0] + age.NONCE_SIZE]
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "payload has no chunks")


def test_swapped_chunks(keyring, bundle):
    data, signature = bundle
    c = layout(data)[1]
    tampered = data[:c[0]] + data[c[1]:c[2]] + data[c[0]:c[1]] + data[c[2]:]
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), "chunk 0 failed authentication")


def test_appended_bytes(keyring, bundle):
    data, signature = bundle
    tampered = bytes(data) + b"x" * 20
    expect(keyring, tampered, resign(tampered, keyring, signature=signature), r"chunk \d+ failed authentication")
    expect(keyring, tampered, signature, "signature does not verify")


def exact_payload(target):
    """Return a valid bundle plaintext whose zlib stream is exactly `target` bytes."""
    pad = target
    for _ in range(20):
        body = lines(PREAMBLE, {"model": "a.B", "pad": "x" * pad})
        payload = zlib.compress(body + lines(manifest_for(body, {"a.B": 1})), 0)  # stored blocks: size is linear
        if len(payload) == target:
            return payload
        pad += target - len(payload)
    raise AssertionError("no padding gives the exact size")


@pytest.mark.parametrize("chunks", [1, 2])
def test_round_trip_payload_exact_multiple_of_chunk(keyring, chunks):
    data, signature = forge(keyring, exact_payload(chunks * age.CHUNK_SIZE), compress=False)
    assert len(layout(data)[1]) == chunks  # the final chunk is full, and no empty chunk follows
    assert (len(data) - layout(data)[0] - age.NONCE_SIZE) == chunks * age.ENC_CHUNK_SIZE
    assert read_all(data, signature, keyring)[1][0]["model"] == "a.B"


def test_trailing_data_after_full_final_chunk(keyring):
    data, _ = forge(keyring, exact_payload(age.CHUNK_SIZE), compress=False)
    data += b"junk"
    expect(keyring, data, resign(data, keyring, json.dumps(METADATA)), "trailing data after the final chunk 0")


def test_wrong_decryption_key(keyring, bundle):
    data, signature = bundle
    other = KeyRing(identities={1: age.X25519Identity.generate()}, primary_epoch=1,
                    trusted=[keyring.signing_key.public_key])
    expect(other, data, signature, r"encrypted for key epoch 1 \(age1\w+\), whose identity is not in the key ring: "
                                   r"it was destroyed or never here$")


def test_unknown_signer(keyring, bundle, tmp_path):
    data, signature = bundle
    generate_keys(tmp_path / "other")
    other = KeyRing.load(tmp_path / "other")
    stranger = KeyRing(identities=keyring.identities, primary_epoch=1, trusted=[other.signing_key.public_key])
    expect(stranger, data, signature, f"signed by key {keyring.key_id}, which is not a trusted key")
    # The right key id but another key: the signature does not verify.
    impostor = minisign.SecretKey(keyring.signing_key.key_id, other.signing_key.key)
    digest = minisign.prehash()
    digest.update(bytes(data))
    forged = minisign.sign(impostor, digest.finalize(), trusted_comment=json.dumps(METADATA)).encode()
    expect(keyring, data, forged, "signature does not verify with any trusted key")


def test_edited_trusted_comment(keyring, bundle):
    data, signature = bundle
    edited = signature.replace(b'"policy":"churned"', b'"policy":"other"')
    assert edited != signature
    expect(keyring, data, edited, r"trusted comment does not verify \(it was edited\)")


def test_preamble_differs_from_trusted_comment(keyring, bundle):
    data, _ = bundle
    other = json.dumps({**METADATA, "subject": "demoapp.Organisation.8"}, separators=(",", ":"))
    expect(keyring, data, resign(bytes(data), keyring, other), "preamble metadata differs from the signed trusted comment")


def test_trusted_comment_not_json(keyring, bundle):
    data, _ = bundle
    expect(keyring, data, resign(bytes(data), keyring, "timestamp:1 file:x"), "trusted comment is not a JSON object")


# -- forged plaintext, properly encrypted and signed -----------------------

PREAMBLE = {"format": "gestore-retention/1", "metadata": METADATA}


def forged(keyring, body, limits=Limits(), **kw):
    data, signature = forge(keyring, body, **kw)
    return lambda message: expect_limits(keyring, data, signature, message, limits)


def expect_limits(keyring, data, signature, message, limits):
    with pytest.raises(BundleError, match=message):
        read_all(data, signature, keyring, limits)


def test_forged_valid_plaintext_reads(keyring):
    body = lines(PREAMBLE, {"model": "a.B"})
    data, signature = forge(keyring, body + lines(manifest_for(body, {"a.B": 1})))
    assert read_all(data, signature, keyring)[1] == [{"model": "a.B"}]


def test_manifest_count_wrong(keyring):
    body = lines(PREAMBLE, {"model": "a.B"}, {"model": "a.B"})
    forged(keyring, body + lines(manifest_for(body, {"a.B": 3})))(r"manifest counts \{'a.B': 3\} do not match")


def test_manifest_total_wrong(keyring):
    body = lines(PREAMBLE, {"model": "a.B"})
    manifest = manifest_for(body, {"a.B": 1})
    manifest["manifest"]["records"] = 2
    forged(keyring, body + lines(manifest))("manifest says 2 records, found 1")


def test_manifest_hash_wrong(keyring):
    body = lines(PREAMBLE, {"model": "a.B"})
    forged(keyring, body + lines(manifest_for(body + b"\n", {"a.B": 1})))("manifest sha256 does not match")


def test_manifest_missing(keyring):
    forged(keyring, lines(PREAMBLE, {"model": "a.B"}))("ends without a manifest")


def test_line_after_manifest(keyring):
    body = lines(PREAMBLE)
    forged(keyring, body + lines(manifest_for(body, {}), {"model": "a.B"}))("line 3 follows the manifest")


def test_malformed_json(keyring):
    forged(keyring, lines(PREAMBLE) + b'{"model": "a.B",\n')("line 2 is not valid JSON")


def test_nan_is_not_json(keyring):
    forged(keyring, lines(PREAMBLE) + b'{"model": "a.B", "x": NaN}\n')("line 2 is not valid JSON")


def test_line_neither_record_nor_manifest(keyring):
    forged(keyring, lines(PREAMBLE, [1, 2]))("line 2 is neither a record nor the manifest")


def test_missing_preamble(keyring):
    forged(keyring, lines({"model": "a.B"}))("first line is not the preamble")


def test_unknown_format(keyring):
    forged(keyring, lines({"format": "gestore-retention/9", "metadata": METADATA}))("unsupported format")


def test_empty_plaintext(keyring):
    forged(keyring, b"")("plaintext is empty")


def test_no_final_newline(keyring):
    body = lines(PREAMBLE)
    forged(keyring, body + json.dumps(manifest_for(body, {})).encode())("does not end with a newline")


def test_not_compressed(keyring):
    forged(keyring, lines(PREAMBLE), compress=False)("compressed stream is corrupt")


def test_compressed_stream_truncated(keyring):
    body = lines(PREAMBLE)
    data, signature = forge(keyring, zlib.compress(body + lines(manifest_for(body, {})))[:-6], compress=False)
    expect_limits(keyring, data, signature, "compressed stream is truncated", Limits())


def test_data_after_compressed_stream(keyring):
    body = lines(PREAMBLE)
    payload = zlib.compress(body + lines(manifest_for(body, {}))) + b"extra"
    data, signature = forge(keyring, payload, compress=False)
    expect_limits(keyring, data, signature, "trailing data after the compressed stream", Limits())


def test_limit_line_length(keyring):
    body = lines(PREAMBLE, {"model": "a.B", "x": "y" * 5000})
    forged(keyring, body + lines(manifest_for(body, {"a.B": 1})), Limits(max_line=4096))("longer than the limit of 4096")


def test_limit_decompressed_total(keyring):
    body = lines(PREAMBLE, {"model": "a.B", "x": "y" * 500_000})
    forged(keyring, body + lines(manifest_for(body, {"a.B": 1})), Limits(max_decompressed=100_000))(
        "decompressed size exceeds the limit of 100000")


def test_limit_nesting_depth(keyring):
    deep = {"model": "a.B", "x": json.loads("[" * 70 + "]" * 70)}
    body = lines(PREAMBLE, deep)
    forged(keyring, body + lines(manifest_for(body, {"a.B": 1})))("line 2 is nested deeper than 64")


def test_limit_nesting_depth_beyond_recursion(keyring):
    body = lines(PREAMBLE) + b'{"model":"a.B","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    forged(keyring, body)("line 2 is nested deeper than 64")


def test_limit_header_size_and_stanzas(keyring):
    data, signature, _ = sealed(keyring, [])
    expect_limits(keyring, data, signature, "header is larger than 64 bytes", Limits(max_header_size=64))
    expect_limits(keyring, data, signature, "more than 0 stanzas", Limits(max_stanzas=0))


def test_memory_stays_bounded(keyring):
    import tracemalloc

    class Sink:
        size = 0

        def write(self, data):
            self.size += len(data)

    def records():
        for i in range(2000):
            yield {"model": "a.B", "pk": i, "blob": random.Random(i).randbytes(2000).hex()}  # ~8 MB in all

    sink = Sink()
    tracemalloc.start()
    seal(sink, METADATA, records(), keyring)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sink.size > 4_000_000 and peak < 1_500_000


def test_open_memory_stays_bounded(keyring, tmp_path):
    """Opening holds one chunk and one line at a time, not the bundle: ~8 MB read with a small peak."""
    import tracemalloc

    def records():
        for i in range(2000):
            yield {"model": "a.B", "pk": i, "blob": random.Random(i).randbytes(2000).hex()}

    path = tmp_path / "big.age"
    with open(path, "wb") as out:
        signature, _ = seal(out, METADATA, records(), keyring)
    assert path.stat().st_size > 4_000_000
    tracemalloc.start()
    with OpenedBundle("big.age", lambda: open(path, "rb"), parse_signature("big.age", signature), keyring) as bundle:
        count = sum(1 for _ in bundle.records())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 2000 and peak < 2_500_000


def test_depth_check_ignores_brackets_inside_strings(keyring):
    record = {"model": "a.B", "text": "[" * 500 + "{" * 500, "ok": [[[1]]]}
    body = lines(PREAMBLE, record)
    data, signature = forge(keyring, body + lines(manifest_for(body, {"a.B": 1})))
    assert read_all(data, signature, keyring)[1] == [record]


def test_limit_number_length(keyring):
    body = lines(PREAMBLE) + b'{"model":"a.B","x":' + b"9" * 1001 + b"}\n"
    forged(keyring, body)("line 2: a number is longer than the limit of 1000 characters")
    body = lines(PREAMBLE, {"model": "a.B", "x": int("9" * 1000), "digits": "9" * 5000})
    data, signature = forge(keyring, body + lines(manifest_for(body, {"a.B": 1})))
    assert read_all(data, signature, keyring)[1][0]["x"] == int("9" * 1000)  # at the limit, and digits in a string
