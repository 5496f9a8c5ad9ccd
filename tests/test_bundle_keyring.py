"""Key files: generation, permissions, rotation, loading from settings."""
import io
import json
import stat
import zlib

import pytest

from gestore_retention.bundle import KeyRing, generate_keys, seal
from gestore_retention.bundle import minisign
from gestore_retention.errors import KeyringError

from .test_bundle_format import METADATA, open_bytes

try:  # a test-only dependency: pip install pyrage
    import pyrage
except ImportError:  # pragma: no cover
    pyrage = None


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_keys_layout_and_modes(tmp_path):
    keys = tmp_path / "keys"
    public = generate_keys(keys)
    key_id = public["key_id"]
    assert public["recipient"].startswith("age1") and len(key_id) == 16
    assert mode(keys) == 0o700
    for name in ("age-epoch-1.key", f"signing-{key_id}.key", f"signing-{key_id}.pub"):
        assert mode(keys / name) == 0o400, name
    identity_file = (keys / "age-epoch-1.key").read_text()
    assert f"# public key: {public['recipient']}\n" in identity_file
    assert identity_file.splitlines()[-1].startswith("AGE-SECRET-KEY-1")
    pub = (keys / f"signing-{key_id}.pub").read_text().splitlines()
    assert pub == [f"untrusted comment: minisign public key {key_id}", public["signing_public_key"]]
    index = json.loads((keys / "keyring.json").read_text())
    created = index["signing_keys"][key_id]["created_at"]
    assert index == {"format": "gestore-retention-keyring/1", "primary_epoch": 1, "signing_key_id": key_id,
                     "signing_keys": {key_id: {"created_at": created}}}
    ring = KeyRing.load(keys)
    assert ring.key_id == key_id and str(ring.recipients()[0]) == public["recipient"]


def test_generate_keys_refuses_to_overwrite(tmp_path):
    generate_keys(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyringError, match="age-epoch-1.key already exists"):
        generate_keys(tmp_path)
    generate_keys(tmp_path, epoch=3)
    with pytest.raises(KeyringError, match="epoch 2 is older than epoch 3"):
        generate_keys(tmp_path, epoch=2)
    assert set(before) <= {p.name for p in tmp_path.iterdir()}


def test_key_ring_is_immutable(tmp_path):
    generate_keys(tmp_path)
    ring = KeyRing.load(tmp_path)
    with pytest.raises(AttributeError):
        ring.primary_epoch = 2
    assert "SECRET" not in repr(ring)


def test_rotation_decrypts_older_epoch(tmp_path):
    first = generate_keys(tmp_path)
    old_ring = KeyRing.load(tmp_path)
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, [{"model": "a.B", "pk": 1}], old_ring)

    second = generate_keys(tmp_path, epoch=2)
    ring = KeyRing.load(tmp_path)
    assert ring.primary_epoch == 2 and sorted(ring.identities) == [1, 2]
    assert [str(r) for r in ring.recipients()] == [second["recipient"]]
    assert ring.key_id == second["key_id"] != first["key_id"]
    # Old bundles: decrypted by the epoch-1 identity, verified by the old .pub.
    with open_bytes(out.getvalue(), signature, ring) as bundle:
        assert list(bundle.records()) == [{"model": "a.B", "pk": 1}]


def test_escrow_recipient(tmp_path):
    escrow = generate_keys(tmp_path / "escrow")
    generate_keys(tmp_path / "keys", escrow_recipient=escrow["recipient"])
    ring = KeyRing.load(tmp_path / "keys")
    assert [str(r) for r in ring.recipients()][1:] == [escrow["recipient"]]
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, [{"model": "a.B"}], ring)
    # The escrow holder decrypts with its own identity; it trusts our signer.
    escrow_ring = KeyRing.load(tmp_path / "escrow")
    holder = KeyRing(identities=escrow_ring.identities, primary_epoch=1, trusted=ring.trusted.values())
    with open_bytes(out.getvalue(), signature, holder) as bundle:
        assert list(bundle.records()) == [{"model": "a.B"}]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(KeyringError, match=f"key directory {tmp_path / 'nope'} does not exist"):
        KeyRing.load(tmp_path / "nope")
    with pytest.raises(KeyringError, match="keyring.json is missing"):
        KeyRing.load(tmp_path)
    generate_keys(tmp_path / "k")
    (tmp_path / "k" / "age-epoch-1.key").chmod(0o600)
    (tmp_path / "k" / "age-epoch-1.key").write_text("# nothing\n")
    with pytest.raises(KeyringError, match="age-epoch-1.key must hold exactly one AGE-SECRET-KEY"):
        KeyRing.load(tmp_path / "k")


def test_from_settings_missing_dir(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("GESTORE_RETENTION_KEYS_DIR", raising=False)
    missing = tmp_path / "missing-keys"
    settings.GESTORE_RETENTION = {"KEYS_DIR": str(missing)}
    with pytest.raises(KeyringError) as info:
        KeyRing.from_settings()
    message = str(info.value)
    assert str(missing) in message
    assert "GESTORE_RETENTION['KEYS_DIR']" in message and "GESTORE_RETENTION_KEYS_DIR" in message
    settings.GESTORE_RETENTION = {}
    with pytest.raises(KeyringError, match="no key directory configured"):
        KeyRing.from_settings()


def test_from_settings_env_when_setting_unset(settings, tmp_path, monkeypatch):
    generate_keys(tmp_path / "env")
    settings.GESTORE_RETENTION = {}
    monkeypatch.setenv("GESTORE_RETENTION_KEYS_DIR", str(tmp_path / "env"))
    assert KeyRing.from_settings().directory == tmp_path / "env"


def test_secret_key_file_is_minisign_unencrypted_layout(tmp_path):
    public = generate_keys(tmp_path)
    secret = minisign.SecretKey.from_file_text((tmp_path / f"signing-{public['key_id']}.key").read_text())
    assert secret.public_key.to_base64() == public["signing_public_key"]
    text = (tmp_path / f"signing-{public['key_id']}.key").read_text().splitlines()[1]
    import base64
    raw = base64.b64decode(text)
    assert raw[:6] == b"Ed\x00\x00B2" and len(raw) == 158


@pytest.mark.skipif(pyrage is None, reason="pip install pyrage to run the interop tests")
def test_stock_age_reads_our_identity_file_and_bundle(tmp_path):
    generate_keys(tmp_path)
    ring = KeyRing.load(tmp_path)
    out = io.BytesIO()
    seal(out, METADATA, [{"model": "a.B"}], ring)
    line = (tmp_path / "age-epoch-1.key").read_text().splitlines()[-1]
    plaintext = zlib.decompress(pyrage.decrypt(out.getvalue(), [pyrage.x25519.Identity.from_str(line)]))
    assert plaintext.splitlines()[1] == b'{"model":"a.B"}'
