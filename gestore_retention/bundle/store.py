"""Put sealed bundles into Django storages and read them back.

A bundle `name` is stored with its signature `name + ".minisig"`. Writes are
durable and never overwrite: on a FileSystemStorage a temp file in the same
directory is fsynced and then hard-linked into place (the signature last);
other storages get the finished file through storage.save(). Every write is
read back and compared by SHA-256.
"""
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages

from gestore_retention.errors import BundleError

from . import format as fmt

SIGNATURE_SUFFIX = ".minisig"
SPOOL_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class SealedBundle:
    """What write_bundle stored: names, file hash and size, record counts, signer."""

    name: str
    signature_name: str
    sha256: str
    size: int
    counts: dict  # {model label: n}
    records: int
    key_id: str  # the minisign key id that signed it


def _label(storage, alias, name):
    if isinstance(storage, FileSystemStorage):
        path = storage.path(name)
        rel = os.path.relpath(path)
        return path if rel.startswith("..") else rel
    return f"{alias}:{name}"


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp_path, path, label):
    """Move `tmp_path` to `path` atomically; refuse if `path` exists."""
    try:
        os.link(tmp_path, path)
    except FileExistsError:
        raise BundleError(f"bundle {label}: {path.name} already exists; bundles are never overwritten") from None
    except OSError:  # no hard links here: fall back to a checked rename
        if path.exists():
            raise BundleError(f"bundle {label}: {path.name} already exists; bundles are never overwritten") from None
        os.replace(tmp_path, path)
    else:
        os.unlink(tmp_path)


def _temp_in(directory, name):
    return tempfile.NamedTemporaryFile(dir=directory, prefix=f".{name}.", suffix=".tmp", delete=False)


def _write_local(storage, name, label, metadata, records, keyring):
    path = Path(storage.path(name))
    sig_path = path.with_name(path.name + SIGNATURE_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    temps, published = [], []
    try:
        with _temp_in(path.parent, path.name) as tmp:
            temps.append(tmp.name)
            out = fmt._HashingWriter(tmp)
            signature, counts = fmt.seal(out, metadata, records, keyring)
            tmp.flush()
            os.fsync(tmp.fileno())
        with _temp_in(path.parent, sig_path.name) as tmp:
            temps.append(tmp.name)
            tmp.write(signature)
            tmp.flush()
            os.fsync(tmp.fileno())
        if storage.file_permissions_mode is not None:
            for temp in temps:
                os.chmod(temp, storage.file_permissions_mode)
        _publish(temps[0], path, label)
        published.append(path)
        _publish(temps[1], sig_path, label)  # the signature last: it marks the bundle complete
        published.append(sig_path)
        _fsync_dir(path.parent)
    except BaseException:
        if len(published) == 1:  # a bundle without its signature is no bundle
            path.unlink(missing_ok=True)
        raise
    finally:
        for temp in temps:
            Path(temp).unlink(missing_ok=True)
    return out.sha256.hexdigest(), out.size, signature, counts


def _write_remote(storage, name, label, metadata, records, keyring):
    sig_name = name + SIGNATURE_SUFFIX
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE) as tmp:
        out = fmt._HashingWriter(tmp)
        signature, counts = fmt.seal(out, metadata, records, keyring)
        tmp.seek(0)
        saved = storage.save(name, File(tmp, name=name))
    if saved != name:
        storage.delete(saved)
        raise BundleError(f"bundle {label} already exists; bundles are never overwritten")
    saved = storage.save(sig_name, ContentFile(signature))
    if saved != sig_name:
        storage.delete(saved)
        storage.delete(name)
        raise BundleError(f"bundle {label}: signature already exists; bundles are never overwritten")
    return out.sha256.hexdigest(), out.size, signature, counts


def write_bundle(storage_alias, name, metadata, records, keyring):
    """Seal `records` with `metadata` into storage `storage_alias` as `name` and `name.minisig`.

    Stream the records (memory stays bounded), write durably, never
    overwrite (BundleError if `name` exists), read back and compare.
    """
    storage = storages[storage_alias]
    label = _label(storage, storage_alias, name)
    if storage.exists(name) or storage.exists(name + SIGNATURE_SUFFIX):
        raise BundleError(f"bundle {label} already exists; bundles are never overwritten")
    write = _write_local if isinstance(storage, FileSystemStorage) else _write_remote
    sha256, size, signature, counts = write(storage, name, label, metadata, records, keyring)

    check = fmt._HashingWriter(_Discard())
    with storage.open(name, "rb") as handle:
        while data := handle.read(fmt.READ_SIZE):
            check.write(data)
    with storage.open(name + SIGNATURE_SUFFIX, "rb") as handle:
        stored_signature = handle.read()
    if check.sha256.hexdigest() != sha256 or check.size != size or stored_signature != signature:
        raise BundleError(f"bundle {label}: read-back does not match what was written")
    return SealedBundle(name=name, signature_name=name + SIGNATURE_SUFFIX, sha256=sha256, size=size,
                        counts=counts, records=sum(counts.values()), key_id=keyring.key_id)


class _Discard:
    def write(self, data):
        return len(data)


def _read_signature(label, open_signature, size, limits):
    if size is not None and size > limits.max_signature_size:
        raise BundleError(f"bundle {label}: signature file is larger than {limits.max_signature_size} bytes")
    try:
        with open_signature() as handle:
            data = handle.read(limits.max_signature_size + 1)
    except FileNotFoundError:
        raise BundleError(f"bundle {label}: signature file {label}{SIGNATURE_SUFFIX} is missing") from None
    if len(data) > limits.max_signature_size:
        raise BundleError(f"bundle {label}: signature file is larger than {limits.max_signature_size} bytes")
    return data


def _storage_access(storage_alias, name):
    storage = storages[storage_alias]
    label = _label(storage, storage_alias, name)
    if not storage.exists(name):
        raise BundleError(f"bundle {label} does not exist")
    sig_name = name + SIGNATURE_SUFFIX
    if not storage.exists(sig_name):
        raise BundleError(f"bundle {label}: signature file {label}{SIGNATURE_SUFFIX} is missing")
    return storage, label, (lambda: storage.open(name, "rb")), (lambda: storage.open(sig_name, "rb"))


def read_bundle(storage_alias, name, keyring, *, limits=fmt.DEFAULT_LIMITS):
    """Open bundle `name` from storage `storage_alias`: verify the signature, then decrypt.

    Return an OpenedBundle whose metadata is verified; its records() checks the rest.
    """
    storage, label, open_file, open_signature = _storage_access(storage_alias, name)
    signature = fmt.parse_signature(label, _read_signature(label, open_signature, None, limits))
    return fmt.OpenedBundle(label, open_file, signature, keyring, limits=limits)


def _regular_file(path, what, missing):
    """Return Path(path) if it is a regular file, else raise BundleError (`missing`: when nothing is there)."""
    if not str(path):
        raise BundleError(f"the {what} path is empty")
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise BundleError(f"{path} is a directory, not a {what} file")
    raise BundleError(f"{path} is not a regular file" if path.exists() else missing)


def _local_access(path, signature_path):
    path = _regular_file(path, "bundle", f"bundle {path} does not exist")
    signature_path = Path(signature_path) if signature_path else path.with_name(path.name + SIGNATURE_SUFFIX)
    _regular_file(signature_path, "signature", f"bundle {path}: signature file {signature_path} is missing")
    return str(path), (lambda: open(path, "rb")), (lambda: open(signature_path, "rb"))


def open_bundle_file(path, signature_path=None, keyring=None, *, limits=fmt.DEFAULT_LIMITS):
    """Like read_bundle, for a local file (signature at `path.minisig` by default).

    Without `keyring`, use KeyRing.from_settings().
    """
    from .keyring import KeyRing

    label, open_file, open_signature = _local_access(path, signature_path)
    keyring = keyring or KeyRing.from_settings()
    signature = fmt.parse_signature(label, _read_signature(label, open_signature, None, limits))
    return fmt.OpenedBundle(label, open_file, signature, keyring, limits=limits)


def _inspect(label, open_file, open_signature, keyring, limits):
    signature_bytes = _read_signature(label, open_signature, None, limits)
    with open_file() as handle:
        facts = fmt.describe(label, handle, signature_bytes, keyring=keyring, limits=limits)
    if keyring is not None:
        signature = fmt.parse_signature(label, signature_bytes)
        try:
            facts["size"] = fmt.verify_signature(label, open_file, signature, keyring).size
            facts["signature_verified"] = True
        except BundleError as exc:
            facts["signature_verified"] = False
            facts["signature_error"] = str(exc)
    return facts


def inspect_bundle(storage_alias, name, *, keyring=None, limits=fmt.DEFAULT_LIMITS):
    """Return header and signature facts of a stored bundle without decrypting it.

    This is a read-only operation. With a `keyring`, also check the signature.
    """
    storage, label, open_file, open_signature = _storage_access(storage_alias, name)
    facts = _inspect(label, open_file, open_signature, keyring, limits)
    facts["size"] = facts["size"] if facts["size"] is not None else storage.size(name)
    return facts


def inspect_bundle_file(path, signature_path=None, *, keyring=None, limits=fmt.DEFAULT_LIMITS):
    """Like inspect_bundle, for a local file. This is a read-only operation."""
    label, open_file, open_signature = _local_access(path, signature_path)
    facts = _inspect(label, open_file, open_signature, keyring, limits)
    facts["size"] = facts["size"] if facts["size"] is not None else os.path.getsize(path)
    return facts


def rewrap_bundle_file(path, signature_path=None, keyring=None, *, limits=fmt.DEFAULT_LIMITS, now=None):
    """Re-wrap a local bundle's file key for the key ring's current recipients, and re-sign it.

    The payload (nonce and every chunk after the header) is copied byte for
    byte, never re-encrypted. Before anything is written the old signature
    must verify with a trusted, unrevoked signer and an identity of the ring
    must unwrap the file key; afterwards the new pair is opened and read to
    the end (signature, every chunk, manifest) before it replaces the old
    one: the bundle file first, then its signature. Return a dict of facts.
    """
    from datetime import datetime, timezone

    from . import age
    from .keyring import KeyRing

    label, open_file, open_signature = _local_access(path, signature_path)
    path = Path(path)
    sig_path = Path(signature_path) if signature_path else path.with_name(path.name + SIGNATURE_SUFFIX)
    keyring = keyring or KeyRing.from_settings()
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    keyring.check_can_sign(now)
    signature = fmt.parse_signature(label, _read_signature(label, open_signature, None, limits))
    verified = fmt.verify_signature(label, open_file, signature, keyring)
    temps = []
    try:
        with open_file() as handle, _temp_in(path.parent, path.name) as tmp:
            temps.append(tmp.name)
            reader = fmt._HashingReader(handle)
            source = age._Source(reader)
            try:
                header = age.read_header(source, max_size=limits.max_header_size, max_stanzas=limits.max_stanzas)
                file_key, identity = age.unwrap(header, keyring.decryption_identities())
            except age.NoIdentityMatch:
                raise BundleError(f"bundle {label}: {fmt.no_identity_message(verified.seal, keyring)}") from None
            except age.HeaderMacError:
                raise BundleError(f"bundle {label}: age header MAC does not verify") from None
            except age.HeaderError as exc:
                raise BundleError(f"bundle {label}: age header is invalid: {exc}") from None
            old_epoch = next((e for e, i in keyring.identities.items() if i is identity), None)
            out = fmt._HashingWriter(tmp)
            out.write(age.write_header(file_key, keyring.recipients()))
            payload = 0
            while data := source.read(fmt.READ_SIZE):
                out.write(data)
                payload += len(data)
            if reader.blake2b.finalize() != verified.digest:
                raise BundleError(f"bundle {label}: file changed while it was rewrapped")
            tmp.flush()
            os.fsync(tmp.fileno())
        comment = fmt.signed_comment(verified.metadata, fmt.seal_info(keyring, now, rewrapped_from_epoch=old_epoch))
        new_signature = fmt.minisign.sign(
            keyring.signing_key, out.blake2b.finalize(), trusted_comment=comment,
            untrusted_comment=f"gestore-retention bundle signature, key {keyring.key_id}").encode()
        with _temp_in(sig_path.parent, sig_path.name) as tmp:
            temps.append(tmp.name)
            tmp.write(new_signature)
            tmp.flush()
            os.fsync(tmp.fileno())
        check = fmt.OpenedBundle(label, lambda: open(temps[0], "rb"), fmt.parse_signature(label, new_signature),
                                 keyring, limits=limits)
        with check:
            for _ in check.records():
                pass
        mode = path.stat().st_mode & 0o777
        for temp in temps:
            os.chmod(temp, mode)
        os.replace(temps[0], path)
        os.replace(temps[1], sig_path)  # a crash between the two renames leaves the new file with the old signature
        _fsync_dir(path.parent)
    finally:
        for temp in temps:
            Path(temp).unlink(missing_ok=True)
    return {
        "bundle": label,
        "status": "rewrapped",
        "from_epoch": old_epoch,
        "to_epoch": keyring.primary_epoch,
        "recipients": [str(r) for r in keyring.recipients()],
        "signer_key_id": keyring.key_id,
        "previous_signer_key_id": signature.key_id_hex,
        "payload_bytes_unchanged": payload,
        "records": check.manifest["records"],
    }
