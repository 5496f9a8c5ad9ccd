"""write_bundle / read_bundle / inspect_bundle through Django STORAGES."""
import pytest

from gestore_retention.bundle import (
    KeyRing,
    SealedBundle,
    generate_keys,
    inspect_bundle,
    inspect_bundle_file,
    open_bundle_file,
    read_bundle,
    write_bundle,
)
from gestore_retention.errors import BundleError

from .test_bundle_format import METADATA, big_records


@pytest.fixture
def keyring(tmp_path):
    generate_keys(tmp_path / "keys")
    return KeyRing.load(tmp_path / "keys")


@pytest.fixture
def fs_storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "retention": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "bundles")}}}
    return tmp_path / "bundles"


@pytest.fixture
def memory_storage(settings):
    settings.STORAGES = {**settings.STORAGES, "retention": {
        "BACKEND": "django.core.files.storage.InMemoryStorage"}}


RECORDS = [{"model": "demoapp.User", "pk": 1, "name": "Zoë"}, {"model": "demoapp.Note", "pk": 9}]


def test_write_and_read_filesystem(fs_storage, keyring):
    sealed = write_bundle("retention", "b-1.age", METADATA, iter(RECORDS), keyring)
    assert isinstance(sealed, SealedBundle)
    assert (sealed.name, sealed.signature_name, sealed.records) == ("b-1.age", "b-1.age.minisig", 2)
    assert sealed.counts == {"demoapp.User": 1, "demoapp.Note": 1} and sealed.key_id == keyring.key_id
    assert sorted(p.name for p in fs_storage.iterdir()) == ["b-1.age", "b-1.age.minisig"]  # no temp files left
    assert (fs_storage / "b-1.age").stat().st_size == sealed.size
    with read_bundle("retention", "b-1.age", keyring) as bundle:
        assert bundle.metadata == METADATA
        assert list(bundle.records()) == RECORDS
        assert bundle.manifest["records"] == 2


def test_write_in_subdirectory_and_big(fs_storage, keyring):
    records = big_records()
    write_bundle("retention", "2025/01/b-2.age", METADATA, records, keyring)
    assert list(read_bundle("retention", "2025/01/b-2.age", keyring).records()) == records


def test_write_and_read_other_storage(memory_storage, keyring):
    sealed = write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    assert list(read_bundle("retention", "b-1.age", keyring).records()) == RECORDS
    with pytest.raises(BundleError, match="already exists"):
        write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    assert inspect_bundle("retention", "b-1.age")["size"] == sealed.size


def test_never_overwrites(fs_storage, keyring):
    write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    before = (fs_storage / "b-1.age").read_bytes()
    with pytest.raises(BundleError, match="b-1.age already exists; bundles are never overwritten"):
        write_bundle("retention", "b-1.age", METADATA, [], keyring)
    assert (fs_storage / "b-1.age").read_bytes() == before


def test_failed_seal_leaves_nothing(fs_storage, keyring):
    with pytest.raises(BundleError, match="record 1"):
        write_bundle("retention", "b-1.age", METADATA, [{"model": "a.B"}, {"no": "model"}], keyring)
    assert list(fs_storage.iterdir()) == []


def test_missing_bundle_or_signature(fs_storage, keyring):
    with pytest.raises(BundleError, match="b-9.age does not exist"):
        read_bundle("retention", "b-9.age", keyring)
    write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    (fs_storage / "b-1.age.minisig").unlink()
    with pytest.raises(BundleError, match=r"signature file .*b-1.age.minisig is missing"):
        read_bundle("retention", "b-1.age", keyring)


def test_tampered_stored_bundle(fs_storage, keyring):
    write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    path = fs_storage / "b-1.age"
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"^bundle .*b-1.age: signature does not verify with any trusted key"):
        read_bundle("retention", "b-1.age", keyring)


def test_inspect_without_decrypting(fs_storage, keyring):
    sealed = write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    facts = inspect_bundle("retention", "b-1.age")
    assert facts["recipients"] == [{"type": "X25519", "arguments": 1}]
    assert facts["signer_key_id"] == keyring.key_id and facts["metadata"] == METADATA
    assert facts["size"] == sealed.size and facts["signer_trusted"] is None
    checked = inspect_bundle_file(fs_storage / "b-1.age", keyring=keyring)
    assert checked["signature_verified"] is True and checked["signer_trusted"] is True


def test_open_local_file(fs_storage, keyring, tmp_path):
    write_bundle("retention", "b-1.age", METADATA, RECORDS, keyring)
    moved = tmp_path / "elsewhere.sig"
    moved.write_bytes((fs_storage / "b-1.age.minisig").read_bytes())
    with open_bundle_file(fs_storage / "b-1.age", moved, keyring) as bundle:
        assert list(bundle.records()) == RECORDS
