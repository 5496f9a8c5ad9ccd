"""The key ring: age identities by epoch, escrow recipients, minisign keys.

Layout of a key directory (mode 0700; key files 0400):

    keyring.json          {"format": "gestore-retention-keyring/1",
                           "primary_epoch": 2, "signing_key_id": "<16 hex>",
                           "escrow_recipients": ["age1..."]}
    age-epoch-<n>.key     a standard age identity file (AGE-SECRET-KEY-1...);
                          the primary epoch encrypts, every epoch decrypts
    signing-<ID>.key      minisign unencrypted secret key (minisign -G -W layout)
    signing-<ID>.pub      minisign public key; every one is trusted to verify
    trusted-<name>.pub    optional: more minisign public keys trusted to verify
"""
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

from gestore_retention import conf
from gestore_retention.errors import KeyringError

from . import minisign
from .age import X25519Identity, X25519Recipient

KEYRING_FILE = "keyring.json"
KEYRING_FORMAT = "gestore-retention-keyring/1"
_EPOCH_FILE = re.compile(r"age-epoch-(\d+)\.key\Z")
SETTING_HINT = "GESTORE_RETENTION['KEYS_DIR'] / env GESTORE_RETENTION_KEYS_DIR"


class KeyRing:
    """Keys a bundle is sealed and opened with. Build it with load() or from_settings()."""

    __slots__ = ("directory", "identities", "primary_epoch", "escrow", "signing_key", "trusted")

    def __init__(self, *, identities, primary_epoch, signing_key=None, trusted=(), escrow=(), directory=None):
        if primary_epoch not in identities:
            raise KeyringError(f"key ring has no age identity for primary epoch {primary_epoch}")
        trusted = {key.key_id: key for key in trusted}
        if signing_key is not None:
            trusted.setdefault(signing_key.key_id, signing_key.public_key)
        values = {
            "directory": directory,
            "identities": MappingProxyType(dict(identities)),  # {epoch: X25519Identity}
            "primary_epoch": primary_epoch,
            "escrow": tuple(escrow),  # (X25519Recipient, ...)
            "signing_key": signing_key,  # minisign.SecretKey or None
            "trusted": MappingProxyType(trusted),  # {key_id bytes: minisign.PublicKey}
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("KeyRing is immutable")

    def __repr__(self):
        return (f"<KeyRing {self.directory or '(memory)'} epochs={sorted(self.identities)} "
                f"primary={self.primary_epoch} signer={self.key_id}>")

    @property
    def key_id(self):
        """The current signing key id (16 hex digits, as minisign prints it), or None."""
        return self.signing_key and minisign.key_id_hex(self.signing_key.key_id)

    def recipients(self):
        """Return the recipients a new bundle is encrypted to: primary, then escrow."""
        return [self.identities[self.primary_epoch].recipient, *self.escrow]

    def decryption_identities(self):
        """Return every identity, primary first, then newest epoch to oldest."""
        order = sorted(self.identities, key=lambda e: (e != self.primary_epoch, -e))
        return [self.identities[e] for e in order]

    @classmethod
    def load(cls, directory):
        """Read the key files in `directory` (see the module docstring)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise KeyringError(f"key directory {directory} does not exist")
        index_path = directory / KEYRING_FILE
        index = _read_index(index_path)
        identities = {}
        for path in sorted(directory.glob("age-epoch-*.key")):
            match = _EPOCH_FILE.match(path.name)
            if match:
                identities[int(match.group(1))] = _read_identity(path)
        if not identities:
            raise KeyringError(f"key directory {directory} has no age-epoch-<n>.key file")
        primary = index.get("primary_epoch", max(identities))
        if primary not in identities:
            raise KeyringError(f"{index_path}: primary_epoch {primary} has no {directory}/age-epoch-{primary}.key")
        signing_key = None
        key_id = index.get("signing_key_id")
        if key_id:
            path = directory / f"signing-{key_id}.key"
            signing_key = _read_key(path, minisign.SecretKey.from_file_text)
        trusted = [_read_key(path, minisign.PublicKey.from_file_text)
                   for pattern in ("signing-*.pub", "trusted-*.pub") for path in sorted(directory.glob(pattern))]
        try:
            escrow = [X25519Recipient.from_string(text) for text in index.get("escrow_recipients", [])]
        except (ValueError, TypeError):
            raise KeyringError(f"{index_path}: escrow_recipients must be a list of age1... recipients") from None
        return cls(identities=identities, primary_epoch=primary, signing_key=signing_key,
                   trusted=trusted, escrow=escrow, directory=directory)

    @classmethod
    def from_settings(cls):
        """Load the key ring from the KEYS_DIR setting."""
        directory = conf.get("KEYS_DIR")
        if not directory:
            raise KeyringError(f"no key directory configured: set {SETTING_HINT}")
        try:
            return cls.load(directory)
        except KeyringError as exc:
            raise KeyringError(f"{exc} (configured by {SETTING_HINT})") from None


def _read_index(path):
    try:
        index = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise KeyringError(f"key ring file {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise KeyringError(f"key ring file {path} is unreadable: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != KEYRING_FORMAT:
        raise KeyringError(f"key ring file {path}: 'format' must be {KEYRING_FORMAT!r}")
    if not isinstance(index.get("primary_epoch", 0), int):
        raise KeyringError(f"key ring file {path}: 'primary_epoch' must be an integer")
    return index


def _read_text(path):
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        raise KeyringError(f"key file {path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyringError(f"key file {path} is unreadable: {exc}") from None


def _read_identity(path):
    lines = [line.strip() for line in _read_text(path).splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if len(keys) != 1:
        raise KeyringError(f"key file {path} must hold exactly one AGE-SECRET-KEY-1... line")
    try:
        return X25519Identity.from_string(keys[0])
    except ValueError:
        raise KeyringError(f"key file {path} does not hold a valid age X25519 identity") from None


def _read_key(path, parse):
    try:
        return parse(_read_text(path))
    except minisign.SignatureError as exc:
        raise KeyringError(f"key file {path}: {exc}") from None


def _write_new(path, text, mode):
    """Create `path` with `mode`; refuse if it exists (O_EXCL)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyringError(f"key file {path} already exists; keys are never overwritten") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)  # umask may have narrowed it


def generate_keys(directory, *, epoch=1, escrow_recipient=None):
    """Create an age identity for `epoch` and a new signing key in `directory`.

    On an existing key directory this rotates: the new epoch becomes primary
    and the new signing key current; older keys stay to decrypt and verify.
    Refuse (KeyringError) to overwrite any key or to go back to an older epoch.
    Return the public parts.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    index_path = directory / KEYRING_FILE
    index = _read_index(index_path) if index_path.exists() else {"format": KEYRING_FORMAT}
    existing = [int(m.group(1)) for p in directory.glob("age-epoch-*.key") if (m := _EPOCH_FILE.match(p.name))]
    identity_path = directory / f"age-epoch-{epoch}.key"
    if identity_path.exists():
        raise KeyringError(f"key file {identity_path} already exists; keys are never overwritten")
    if existing and epoch < max(existing):
        raise KeyringError(f"epoch {epoch} is older than epoch {max(existing)} in {directory}")
    if escrow_recipient is not None:
        try:
            X25519Recipient.from_string(escrow_recipient)
        except ValueError:
            raise KeyringError(f"escrow recipient {escrow_recipient!r} is not an age1... recipient") from None
        index["escrow_recipients"] = [escrow_recipient]

    identity = X25519Identity.generate()
    signing = minisign.SecretKey.generate()
    key_id = minisign.key_id_hex(signing.key_id)
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    _write_new(identity_path, f"# created: {created}\n# public key: {identity.recipient}\n"
                              f"{identity.to_string()}\n", 0o400)
    _write_new(directory / f"signing-{key_id}.key", signing.to_file_text(), 0o400)
    _write_new(directory / f"signing-{key_id}.pub", signing.public_key.to_file_text(), 0o400)

    index.update(primary_epoch=epoch, signing_key_id=key_id)
    tmp = directory / f".{KEYRING_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    _write_new(tmp, json.dumps(index, indent=2, sort_keys=True) + "\n", 0o600)
    os.replace(tmp, index_path)
    return {
        "recipient": str(identity.recipient),
        "signing_public_key": signing.public_key.to_base64(),
        "key_id": key_id,
        "epoch": epoch,
    }
