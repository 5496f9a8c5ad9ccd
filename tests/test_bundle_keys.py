"""Keys (issue 5, item 4): signing-key validity windows and revocation, escrow,
crypto-shredding by destroying an epoch key, `bundle rewrap`, `retention keygen`."""
import io
import json
import os
import stat
from datetime import datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gestore_retention.bundle import (
    KeyRing,
    destroy_epoch,
    generate_keys,
    inspect_bundle_file,
    open_bundle_file,
    revoke_signing_key,
    rewrap_bundle_file,
    seal,
)
from gestore_retention.bundle import age
from gestore_retention.errors import BundleError, KeyringError

from .test_bundle_format import METADATA, open_bytes

RECORDS = [{"model": "a.B", "pk": i, "text": "x" * 200} for i in range(400)]


def write_pair(directory, name, keyring, records=RECORDS, now=None):
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, records, keyring, now=now)
    path = directory / name
    path.write_bytes(out.getvalue())
    path.with_name(name + ".minisig").write_bytes(signature)
    return path


def read_all(path, keyring):
    with open_bundle_file(path, keyring=keyring) as bundle:
        return list(bundle.records())


def edit_index(directory, change):
    path = directory / "keyring.json"
    index = json.loads(path.read_text())
    change(index)
    path.write_text(json.dumps(index))


def header_end(data):
    return data.index(b"\n", data.index(b"\n--- ") + 1) + 1


@pytest.fixture
def keys(tmp_path):
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


# -- validity windows and revocation -------------------------------------------


def test_expired_signer_is_refused(keys, tmp_path):
    ring = KeyRing.load(keys)
    path = write_pair(tmp_path, "b.age", ring, now=datetime(2025, 6, 1, tzinfo=timezone.utc))
    edit_index(keys, lambda ix: ix["signing_keys"][ring.key_id].update(not_after="2025-05-31T00:00:00Z"))
    with pytest.raises(BundleError, match=rf"^bundle \S+b.age: signing key {ring.key_id} had expired at "
                                          r"2025-06-01T00:00:00\+00:00 \(valid - \.\. 2025-05-31"):
        read_all(path, KeyRing.load(keys))


def test_signer_not_yet_valid_is_refused(keys, tmp_path):
    ring = KeyRing.load(keys)
    path = write_pair(tmp_path, "b.age", ring, now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    edit_index(keys, lambda ix: ix["signing_keys"][ring.key_id].update(not_before="2025-02-01T00:00:00"))
    with pytest.raises(BundleError, match=f"signing key {ring.key_id} was not yet valid at 2025-01-01"):
        read_all(path, KeyRing.load(keys))


def test_signature_inside_the_window_verifies(keys, tmp_path):
    ring = KeyRing.load(keys)
    path = write_pair(tmp_path, "b.age", ring, now=datetime(2025, 6, 1, tzinfo=timezone.utc))
    edit_index(keys, lambda ix: ix["signing_keys"][ring.key_id].update(
        not_before="2025-01-01T00:00:00Z", not_after="2025-12-31T00:00:00Z"))
    assert len(read_all(path, KeyRing.load(keys))) == len(RECORDS)


def test_seal_refuses_an_expired_or_revoked_signing_key(keys, tmp_path):
    ring = KeyRing.load(keys)
    edit_index(keys, lambda ix: ix["signing_keys"][ring.key_id].update(not_after="2020-01-01T00:00:00Z"))
    with pytest.raises(KeyringError, match=f"signing key {ring.key_id} had expired"):
        seal(io.BytesIO(), METADATA, [], KeyRing.load(keys))
    revoke_signing_key(keys, ring.key_id, reason="laptop stolen")
    with pytest.raises(KeyringError, match=f"signing key {ring.key_id} was revoked on .*: laptop stolen"):
        seal(io.BytesIO(), METADATA, [], KeyRing.load(keys))


def test_revoked_signer_is_refused_before_reading(keys, tmp_path):
    ring = KeyRing.load(keys)
    path = write_pair(tmp_path, "b.age", ring)
    revoke_signing_key(keys, ring.key_id.lower(), reason="compromised")
    revoked = KeyRing.load(keys)
    opened = []

    def open_file():
        opened.append(1)
        return open(path, "rb")

    from gestore_retention.bundle.format import OpenedBundle, parse_signature
    signature = parse_signature("b.age", path.with_name("b.age.minisig").read_bytes())
    with pytest.raises(BundleError, match=rf"^bundle b.age: signing key {ring.key_id} was revoked on \S+: compromised$"):
        OpenedBundle("b.age", open_file, signature, revoked)
    assert opened == []  # refused on the key id alone
    assert inspect_bundle_file(path, keyring=revoked)["signer_revoked"] is True


def test_revoke_unknown_key_is_an_error(keys):
    with pytest.raises(KeyringError, match="no signing key 0000000000000001"):
        revoke_signing_key(keys, "0000000000000001")
    with pytest.raises(KeyringError, match="not a 16-hex-digit signing key id"):
        revoke_signing_key(keys, "xyz")


def test_rotation_retires_the_old_signing_key(keys, tmp_path):
    old = KeyRing.load(keys)
    before = write_pair(tmp_path, "before.age", old, now=datetime.now(timezone.utc) - timedelta(days=1))
    generate_keys(keys, epoch=2)
    ring = KeyRing.load(keys)
    not_after = ring.windows[old.signing_key.key_id][1]
    assert not_after is not None and ring.windows[ring.signing_key.key_id] == (None, None)
    assert len(read_all(before, ring)) == len(RECORDS)  # signed before the rotation: still valid
    # The retired key, still in someone's memory, signs after the rotation: refused.
    late = write_pair(tmp_path, "late.age", old, now=not_after + timedelta(seconds=5))
    with pytest.raises(BundleError, match=f"signing key {old.key_id} had expired"):
        read_all(late, ring)


def test_bad_window_in_keyring_json(keys):
    ring = KeyRing.load(keys)
    edit_index(keys, lambda ix: ix["signing_keys"][ring.key_id].update(not_after="soon"))
    with pytest.raises(KeyringError, match=rf"signing_keys.{ring.key_id}.not_after: 'soon' is not an ISO 8601 time"):
        KeyRing.load(keys)


# -- escrow -----------------------------------------------------------------------


def test_escrow_recipient_is_on_every_bundle_and_decrypts_alone(tmp_path):
    escrow = generate_keys(tmp_path / "escrow")
    generate_keys(tmp_path / "keys", escrow_recipient=escrow["recipient"])
    generate_keys(tmp_path / "keys", epoch=2)  # rotation keeps the escrow recipient
    ring = KeyRing.load(tmp_path / "keys")
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, RECORDS, ring)
    data = out.getvalue()
    header = age.read_header(io.BytesIO(data))
    assert len(header.stanzas) == 2 and [str(r) for r in ring.recipients()][1] == escrow["recipient"]
    # The escrow identity alone, in a ring holding none of ours, decrypts it.
    escrow_identity = KeyRing.load(tmp_path / "escrow").identities[1]
    holder = KeyRing(identities={7: escrow_identity}, primary_epoch=7, trusted=ring.trusted.values())
    with open_bytes(data, signature, holder) as bundle:
        assert list(bundle.records()) == RECORDS and bundle.epoch == 7
        assert bundle.seal["recipients"] == [str(r) for r in ring.recipients()]


# -- crypto-shredding ---------------------------------------------------------------


def test_destroying_an_epoch_key_shreds_its_bundles(keys, tmp_path, settings, monkeypatch):
    old = write_pair(tmp_path, "x.age", KeyRing.load(keys))
    recipient = str(KeyRing.load(keys).recipients()[0])
    generate_keys(keys, epoch=2)
    with pytest.raises(KeyringError, match="epoch 2 is the primary epoch"):
        destroy_epoch(keys, 2)
    assert destroy_epoch(keys, 1) == recipient
    assert not (keys / "age-epoch-1.key").exists()
    ring = KeyRing.load(keys)
    assert sorted(ring.identities) == [2] and ring.destroyed[1]["recipient"] == recipient
    with pytest.raises(BundleError, match=rf"^bundle \S+x.age: encrypted for key epoch 1 \({recipient}\), which was "
                                          r"destroyed on \S+: the bundle is crypto-shredded$"):
        read_all(old, ring)
    with pytest.raises(KeyringError, match="epoch 1 was destroyed"):
        generate_keys(keys, epoch=1)
    # `bundle verify` says exactly that, in one line.
    monkeypatch.delenv("GESTORE_RETENTION_KEYS_DIR", raising=False)
    settings.GESTORE_RETENTION = {"KEYS_DIR": str(keys)}
    with pytest.raises(CommandError, match=rf"^bundle \S+x.age: encrypted for key epoch 1 \({recipient}\), which was "
                                           "destroyed on"):
        call_command("bundle", "verify", str(old), stdout=StringIO())


def test_missing_epoch_key_message(keys, tmp_path):
    path = write_pair(tmp_path, "x.age", KeyRing.load(keys))
    recipient = str(KeyRing.load(keys).recipients()[0])
    generate_keys(keys, epoch=2)
    os.chmod(keys / "age-epoch-1.key", 0o600)
    (keys / "age-epoch-1.key").unlink()  # gone without a record (a copied key directory, say)
    with pytest.raises(BundleError, match=rf"^bundle \S+x.age: encrypted for key epoch 1 \({recipient}\), whose "
                                          r"identity is not in the key ring: it was destroyed or never here$"):
        read_all(path, KeyRing.load(keys))


# -- rewrap --------------------------------------------------------------------------


def test_rewrap_keeps_the_payload_and_survives_destroying_the_old_epoch(keys, tmp_path):
    escrow = generate_keys(tmp_path / "escrow")
    path = write_pair(tmp_path, "r.age", KeyRing.load(keys), records=RECORDS * 20)
    before = path.read_bytes()
    first_signer = KeyRing.load(keys).key_id
    generate_keys(keys, epoch=2, escrow_recipient=escrow["recipient"])
    ring = KeyRing.load(keys)
    facts = rewrap_bundle_file(path, keyring=ring)
    after = path.read_bytes()
    assert facts["from_epoch"] == 1 and facts["to_epoch"] == 2 and facts["previous_signer_key_id"] == first_signer
    assert facts["records"] == len(RECORDS) * 20
    # Not re-encrypted: every byte after the header (nonce, chunks) is the same.
    assert after[header_end(after):] == before[header_end(before):]
    assert facts["payload_bytes_unchanged"] == len(after) - header_end(after)
    assert len(age.read_header(io.BytesIO(after)).stanzas) == 2  # epoch 2 and the escrow
    destroy_epoch(keys, 1)
    ring = KeyRing.load(keys)
    with open_bundle_file(path, keyring=ring) as bundle:
        assert bundle.metadata == METADATA and bundle.epoch == 2
        assert bundle.signer_key_id == ring.key_id and bundle.seal["rewrapped_from_epoch"] == 1
        assert len(list(bundle.records())) == len(RECORDS) * 20
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_rewrap_refuses_a_bundle_whose_signature_fails(keys, tmp_path):
    path = write_pair(tmp_path, "r.age", KeyRing.load(keys))
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="signature does not verify"):
        rewrap_bundle_file(path, keyring=KeyRing.load(keys))
    assert path.read_bytes() == bytes(data)


def test_rewrap_of_a_shredded_bundle_is_refused(keys, tmp_path):
    path = write_pair(tmp_path, "r.age", KeyRing.load(keys))
    before = path.read_bytes(), path.with_name("r.age.minisig").read_bytes()
    generate_keys(keys, epoch=2)
    destroy_epoch(keys, 1)
    with pytest.raises(BundleError, match="encrypted for key epoch 1 .* crypto-shredded"):
        rewrap_bundle_file(path, keyring=KeyRing.load(keys))
    assert (path.read_bytes(), path.with_name("r.age.minisig").read_bytes()) == before


def test_bundle_rewrap_command(keys, tmp_path, settings, monkeypatch):
    path = write_pair(tmp_path, "r.age", KeyRing.load(keys))
    generate_keys(keys, epoch=2)
    monkeypatch.delenv("GESTORE_RETENTION_KEYS_DIR", raising=False)
    settings.GESTORE_RETENTION = {"KEYS_DIR": str(keys)}
    out = StringIO()
    call_command("bundle", "rewrap", str(path), "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["status"] == "rewrapped" and result["to_epoch"] == 2
    out = StringIO()
    call_command("bundle", "inspect", str(path), "--json", stdout=out)
    facts = json.loads(out.getvalue())
    assert facts["decrypts_with_epoch"] == 2 and facts["seal"]["epoch"] == 2 and facts["signature_verified"] is True


# -- retention keygen ------------------------------------------------------------------


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def keygen(*args):
    out = StringIO()
    call_command("retention", "keygen", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_keygen_rotates_revokes_and_destroys(tmp_path):
    keys = tmp_path / "k"
    escrow = generate_keys(tmp_path / "escrow")
    assert "epoch: 1" in keygen("--dir", str(keys), "--escrow", escrow["recipient"])
    assert "epoch: 2" in keygen("--dir", str(keys))  # the next epoch by default
    assert mode(keys / "age-epoch-2.key") == 0o400
    ring = KeyRing.load(keys)
    assert ring.primary_epoch == 2 and [str(r) for r in ring.recipients()][1:] == [escrow["recipient"]]
    first = next(k for k in ring.windows if k != ring.signing_key.key_id)
    from gestore_retention.bundle.minisign import key_id_hex
    assert "revoked" in keygen("--dir", str(keys), "--revoke", key_id_hex(first), "--reason", "test")
    assert "destroyed" in keygen("--dir", str(keys), "--destroy-epoch", "1")
    ring = KeyRing.load(keys)
    assert first in ring.revoked and 1 in ring.destroyed and sorted(ring.identities) == [2]
    assert "epoch: 3" in keygen("--dir", str(keys))
    with pytest.raises(CommandError, match="epoch 3 is the primary epoch"):
        keygen("--dir", str(keys), "--destroy-epoch", "3")
    with pytest.raises(CommandError, match="not an age1... recipient"):
        keygen("--dir", str(tmp_path / "new"), "--escrow", "age1nope")
    assert not (tmp_path / "new").exists()  # nothing written
