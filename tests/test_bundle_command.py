"""The `bundle` management command: inspect and verify a file."""
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gestore_retention.bundle import KeyRing, generate_keys, write_bundle

from .test_bundle_format import METADATA


@pytest.fixture
def bundle_path(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("GESTORE_RETENTION_KEYS_DIR", raising=False)
    generate_keys(tmp_path / "keys")
    settings.GESTORE_RETENTION = {"KEYS_DIR": str(tmp_path / "keys")}
    settings.STORAGES = {**settings.STORAGES, "retention": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "bundles")}}}
    write_bundle("retention", "b-1.age", METADATA, [{"model": "a.B"}] * 3, KeyRing.from_settings())
    return tmp_path / "bundles" / "b-1.age"


def run(*args):
    out = StringIO()
    call_command("bundle", *args, stdout=out)
    return out.getvalue()


def test_inspect(bundle_path):
    facts = json.loads(run("inspect", str(bundle_path), "--json"))
    assert facts["metadata"] == METADATA and facts["signature_verified"] is True
    assert "recipients:" in run("inspect", str(bundle_path))


def test_inspect_of_a_tampered_bundle_shows_the_facts_and_fails(bundle_path):
    data = bytearray(bundle_path.read_bytes())
    data[-10] ^= 1
    bundle_path.write_bytes(bytes(data))
    out = StringIO()
    with pytest.raises(CommandError, match="unauthenticated"):
        call_command("bundle", "inspect", str(bundle_path), stdout=out)
    assert "signature_verified: False" in out.getvalue()


def test_inspect_of_a_truncated_bundle_names_it_once(bundle_path):
    bundle_path.write_bytes(bundle_path.read_bytes()[:300])
    with pytest.raises(CommandError, match="unauthenticated") as info:
        call_command("bundle", "inspect", str(bundle_path), stdout=StringIO())
    assert str(info.value).count("b-1.age") == 1, str(info.value)


def test_verify(bundle_path):
    result = json.loads(run("verify", str(bundle_path), "--json"))
    assert result["status"] == "OK" and result["records"] == 3 and result["counts"] == {"a.B": 3}


def test_verify_tampered_is_one_line_error(bundle_path):
    data = bytearray(bundle_path.read_bytes())
    data[100] ^= 1
    bundle_path.write_bytes(bytes(data))
    with pytest.raises(CommandError, match=r"^bundle .*b-1.age: signature does not verify") as info:
        run("verify", str(bundle_path))
    assert "\n" not in str(info.value)


def test_verify_missing_signature(bundle_path):
    bundle_path.with_name("b-1.age.minisig").unlink()
    with pytest.raises(CommandError, match="b-1.age.minisig is missing"):
        run("verify", str(bundle_path))


def test_verify_missing_keys(bundle_path, settings, tmp_path):
    settings.GESTORE_RETENTION = {"KEYS_DIR": str(tmp_path / "none")}
    with pytest.raises(CommandError, match=r"key directory .*none does not exist .*KEYS_DIR"):
        run("verify", str(bundle_path))


def test_help_texts():
    from gestore_retention.management.commands.bundle import Command

    parser = Command().create_parser("manage.py", "bundle")
    text = parser.format_help()
    assert "inspect" in text and "verify" in text and "PATH.minisig" in text
