"""Interop with the stock tools: the Debian packages `age` (1.1.1) and `minisign` (0.11).

An operator whose app is gone recovers a bundle with `age -d -i age-epoch-N.key`
and checks it with `minisign -V -p signing-ID.pub`; files those tools make open
with our code. Install them with scripts/install-interop-tools.sh (`make test`
runs it). Without them these tests skip, except under CI=true, where they fail.
"""
import io
import json
import os
import shutil
import subprocess
import zlib

import pytest

from gestore_retention.bundle import KeyRing, generate_keys, seal
from gestore_retention.bundle import age, minisign

from .test_bundle_format import METADATA, open_bytes

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
RECORDS = [{"model": "demoapp.Note", "pk": i, "text": f"note {i} Zoë 日本 " + os.urandom(i % 300).hex()}
           for i in range(2000)]


def tool(name):
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (bash scripts/install-interop-tools.sh)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true needs the interop tools")
        pytest.skip(message)
    return path


def run(*argv, **kw):
    return subprocess.run(argv, capture_output=True, timeout=60, check=False, **kw)


@pytest.fixture
def keys(tmp_path):
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def bundle(keys, tmp_path):
    ring = KeyRing.load(keys)
    out = io.BytesIO()
    signature, _ = seal(out, METADATA, RECORDS, ring)
    path = tmp_path / "b-1.age"
    path.write_bytes(out.getvalue())
    path.with_name("b-1.age.minisig").write_bytes(signature)
    return path, ring


def test_stock_age_decrypts_our_bundle(keys, bundle):
    age_bin = tool("age")
    path, ring = bundle
    result = run(age_bin, "-d", "-i", str(keys / "age-epoch-1.key"), str(path))
    assert result.returncode == 0, result.stderr.decode()
    lines = zlib.decompress(result.stdout).decode().splitlines()
    assert json.loads(lines[0]) == {"format": "gestore-retention/1", "metadata": METADATA}
    assert [json.loads(line) for line in lines[1:-1]] == RECORDS
    assert json.loads(lines[-1])["manifest"]["records"] == len(RECORDS)
    assert len(path.read_bytes()) > 3 * age.ENC_CHUNK_SIZE  # several STREAM chunks


def test_stock_age_refuses_a_tampered_bundle(keys, bundle, tmp_path):
    age_bin = tool("age")
    path, _ = bundle
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.age"
    bad.write_bytes(bytes(data))
    result = run(age_bin, "-d", "-i", str(keys / "age-epoch-1.key"), "-o", str(tmp_path / "out"), str(bad))
    assert result.returncode != 0


def test_stock_minisign_verifies_our_signature(keys, bundle):
    minisign_bin = tool("minisign")
    path, ring = bundle
    pub = keys / f"signing-{ring.key_id}.pub"
    result = run(minisign_bin, "-V", "-p", str(pub), "-m", str(path))
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode()
    assert "Signature and comment signature verified" in output
    comment = next(line for line in output.splitlines() if line.startswith("Trusted comment: "))
    trusted = json.loads(comment[len("Trusted comment: "):])
    assert {k: v for k, v in trusted.items() if k != "seal"} == METADATA
    assert trusted["seal"]["epoch"] == 1


def test_stock_minisign_rejects_a_changed_file(keys, bundle, tmp_path):
    minisign_bin = tool("minisign")
    path, ring = bundle
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    result = run(minisign_bin, "-V", "-p", str(keys / f"signing-{ring.key_id}.pub"), "-m", str(path))
    assert result.returncode != 0


def test_we_open_a_file_encrypted_by_stock_age(tmp_path):
    age_bin = tool("age")
    identity = age.X25519Identity.generate()
    plaintext = os.urandom(3 * age.CHUNK_SIZE + 123)
    (tmp_path / "plain").write_bytes(plaintext)
    result = run(age_bin, "-r", str(identity.recipient), "-o", str(tmp_path / "enc.age"), str(tmp_path / "plain"))
    assert result.returncode == 0, result.stderr.decode()
    with open(tmp_path / "enc.age", "rb") as handle:
        assert b"".join(age.decrypt(handle, [identity]).chunks()) == plaintext


def test_we_open_a_file_encrypted_by_stock_age_for_a_key_it_generated(tmp_path):
    age_bin = tool("age")
    keygen = shutil.which("age-keygen") or pytest.skip("age-keygen is not installed")
    assert run(keygen, "-o", str(tmp_path / "id.txt")).returncode == 0
    text = (tmp_path / "id.txt").read_text()
    recipient = next(line.split(": ")[1] for line in text.splitlines() if line.startswith("# public key: "))
    identity = age.X25519Identity.from_string(text.splitlines()[-1])
    assert str(identity.recipient) == recipient
    result = run(age_bin, "-r", recipient, input=b"hello from age")
    assert result.returncode == 0
    assert b"".join(age.decrypt(io.BytesIO(result.stdout), [identity]).chunks()) == b"hello from age"


def test_we_verify_a_signature_made_by_stock_minisign(tmp_path):
    minisign_bin = tool("minisign")
    pub, sec = tmp_path / "m.pub", tmp_path / "m.key"
    result = run(minisign_bin, "-G", "-W", "-p", str(pub), "-s", str(sec))
    assert result.returncode == 0, result.stderr.decode()
    message = tmp_path / "file.bin"
    message.write_bytes(os.urandom(200_000))
    comment = json.dumps({"bundle": "x", "n": 1}, separators=(",", ":"))
    result = run(minisign_bin, "-S", "-s", str(sec), "-m", str(message), "-t", comment)
    assert result.returncode == 0, result.stderr.decode()
    signature = minisign.Signature.parse((tmp_path / "file.bin.minisig").read_bytes())
    public = minisign.PublicKey.from_file_text(pub.read_text())
    digest = minisign.prehash()
    digest.update(message.read_bytes())
    assert minisign.verify(signature, digest.finalize(), {public.key_id: public}) == public
    assert signature.trusted_comment == comment and signature.key_id_hex == public.key_id_hex
    # Its unencrypted secret key file is the layout our key ring reads; a signature we make verifies with it.
    secret = minisign.SecretKey.from_file_text(sec.read_text())
    assert secret.public_key.to_base64() == public.to_base64()
    digest = minisign.prehash()
    digest.update(message.read_bytes())
    ours = minisign.sign(secret, digest.finalize(), trusted_comment="ours")
    (tmp_path / "file.bin.minisig").write_bytes(ours.encode())
    assert run(minisign_bin, "-V", "-p", str(pub), "-m", str(message)).returncode == 0
    # A changed file does not verify with our code either.
    digest = minisign.prehash()
    digest.update(message.read_bytes() + b"x")
    with pytest.raises(minisign.SignatureError):
        minisign.verify(signature, digest.finalize(), {public.key_id: public})


def test_whole_bundle_made_with_stock_tools_opens(tmp_path, keys):
    """A bundle encrypted by `age` and signed by `minisign` (stock) opens with OpenedBundle."""
    age_bin, minisign_bin = tool("age"), tool("minisign")
    ring = KeyRing.load(keys)
    body = json.dumps({"format": "gestore-retention/1", "metadata": METADATA}).encode() + b"\n"
    body += b'{"model":"a.B","pk":1}\n'
    import hashlib
    manifest = {"manifest": {"counts": {"a.B": 1}, "records": 1, "sha256": hashlib.sha256(body).hexdigest()}}
    (tmp_path / "plain").write_bytes(zlib.compress(body + json.dumps(manifest).encode() + b"\n"))
    recipient = str(ring.recipients()[0])
    assert run(age_bin, "-r", recipient, "-o", str(tmp_path / "s.age"), str(tmp_path / "plain")).returncode == 0
    sec = keys / f"signing-{ring.key_id}.key"
    comment = json.dumps(METADATA, separators=(",", ":"), sort_keys=True)
    result = run(minisign_bin, "-S", "-s", str(sec), "-m", str(tmp_path / "s.age"), "-t", comment)
    assert result.returncode == 0, result.stderr.decode()
    data = (tmp_path / "s.age").read_bytes()
    with open_bytes(data, (tmp_path / "s.age.minisig").read_bytes(), ring) as bundle:
        assert bundle.metadata == METADATA and list(bundle.records()) == [{"model": "a.B", "pk": 1}]
