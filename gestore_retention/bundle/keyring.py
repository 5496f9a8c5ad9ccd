"""The key ring: age identities by epoch, escrow recipients, minisign keys.

Layout of a key directory (mode 0700; key files 0400):

    keyring.json          {"format": "gestore-retention-keyring/1",
                           "primary_epoch": 2, "signing_key_id": "<16 hex>",
                           "escrow_recipients": ["age1..."],
                           "signing_keys": {"<ID>": {"not_before": "<ISO 8601>",
                                                     "not_after": "<ISO 8601>"}},
                           "revoked_keys": {"<ID>": {"revoked_at": "...", "reason": "..."}},
                           "destroyed_epochs": {"1": {"recipient": "age1...",
                                                      "destroyed_at": "..."}}}
    age-epoch-<n>.key     a standard age identity file (AGE-SECRET-KEY-1...);
                          the primary epoch encrypts, every epoch decrypts
    signing-<ID>.key      minisign unencrypted secret key (minisign -G -W layout)
    signing-<ID>.pub      minisign public key; every one is trusted to verify
    trusted-<name>.pub    optional: more minisign public keys trusted to verify

A signing key verifies only signatures made (by the signed `signed_at` time)
inside its validity window, and none once it is revoked. Rotation closes the
window of the previous signing key. Destroying an epoch's identity
(crypto-shredding) makes every bundle encrypted only for it unreadable.
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


def utcnow():
    return datetime.now(timezone.utc).replace(microsecond=0)


def parse_time(value, what):
    """Parse an ISO 8601 time (a naive one is UTC); raise KeyringError naming `what`."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise KeyringError(f"{what}: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class KeyRing:
    """Keys a bundle is sealed and opened with. Build it with load() or from_settings().

    `windows` maps signing key ids (8 bytes) to (not_before, not_after)
    aware datetimes (either may be None); `revoked` maps key ids to
    {"revoked_at", "reason"}; `destroyed` maps epochs whose identity was
    destroyed to {"recipient", "destroyed_at"}.
    """

    __slots__ = ("directory", "identities", "primary_epoch", "escrow", "signing_key", "trusted",
                 "windows", "revoked", "destroyed")

    def __init__(self, *, identities, primary_epoch, signing_key=None, trusted=(), escrow=(), directory=None,
                 windows=None, revoked=None, destroyed=None):
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
            "windows": MappingProxyType(dict(windows or {})),  # {key_id bytes: (not_before, not_after)}
            "revoked": MappingProxyType(dict(revoked or {})),  # {key_id bytes: {"revoked_at", "reason"}}
            "destroyed": MappingProxyType(dict(destroyed or {})),  # {epoch: {"recipient", "destroyed_at"}}
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

    def epoch_of(self, recipient):
        """Return the epoch whose identity (held or destroyed) is `recipient` (an age1... str), or None."""
        for epoch, identity in self.identities.items():
            if str(identity.recipient) == recipient:
                return epoch
        for epoch, info in self.destroyed.items():
            if info.get("recipient") == recipient:
                return epoch
        return None

    def signer_problem(self, key_id, signed_at):
        """Return why signing key `key_id` (8 bytes) is not valid at `signed_at`, or None.

        Revoked keys are never valid. A key with a validity window is valid
        only when `signed_at` (an aware datetime, or None if unknown) is inside it.
        """
        name = minisign.key_id_hex(key_id)
        if key_id in self.revoked:
            info = self.revoked[key_id]
            reason = f": {info['reason']}" if info.get("reason") else ""
            when = f" on {info['revoked_at']}" if info.get("revoked_at") else ""
            return f"signing key {name} was revoked{when}{reason}"
        not_before, not_after = self.windows.get(key_id, (None, None))
        if not_before is None and not_after is None:
            return None
        window = f"{not_before.isoformat() if not_before else '-'} .. {not_after.isoformat() if not_after else '-'}"
        if signed_at is None:
            return f"signing key {name} has a validity window ({window}) but the signature has no signing time"
        if not_before is not None and signed_at < not_before:
            return f"signing key {name} was not yet valid at {signed_at.isoformat()} (valid {window})"
        if not_after is not None and signed_at > not_after:
            return f"signing key {name} had expired at {signed_at.isoformat()} (valid {window})"
        return None

    def check_can_sign(self, now=None):
        """Raise KeyringError unless the current signing key may sign at `now`."""
        where = f"key ring {self.directory}" if self.directory else "key ring"
        if self.signing_key is None:
            raise KeyringError(f"{where} has no current signing key")
        problem = self.signer_problem(self.signing_key.key_id, now or utcnow())
        if problem:
            raise KeyringError(f"{where}: {problem}; rotate with `manage.py retention keygen`")

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
        windows, revoked, destroyed = _read_key_states(index, index_path)
        return cls(identities=identities, primary_epoch=primary, signing_key=signing_key,
                   trusted=trusted, escrow=escrow, directory=directory,
                   windows=windows, revoked=revoked, destroyed=destroyed)

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


def _key_id_bytes(text, where):
    try:
        if len(text) != 16:
            raise ValueError
        return minisign.key_id_from_hex(text)
    except (ValueError, TypeError):
        raise KeyringError(f"{where}: {text!r} is not a 16-hex-digit signing key id") from None


def _read_key_states(index, path):
    """Return (windows, revoked, destroyed) from keyring.json's optional sections."""
    sections = {}
    for name in ("signing_keys", "revoked_keys", "destroyed_epochs"):
        value = index.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise KeyringError(f"key ring file {path}: '{name}' must be an object of objects")
        sections[name] = value
    windows = {}
    for text, info in sections["signing_keys"].items():
        where = f"key ring file {path}: signing_keys.{text}"
        window = (parse_time(info.get("not_before"), where + ".not_before"),
                  parse_time(info.get("not_after"), where + ".not_after"))
        if window[0] and window[1] and window[0] > window[1]:
            raise KeyringError(f"{where}: not_before is after not_after")
        windows[_key_id_bytes(text, where)] = window
    revoked = {_key_id_bytes(text, f"key ring file {path}: revoked_keys"): dict(info)
               for text, info in sections["revoked_keys"].items()}
    destroyed = {}
    for text, info in sections["destroyed_epochs"].items():
        if not text.isdigit():
            raise KeyringError(f"key ring file {path}: destroyed_epochs key {text!r} is not an epoch number")
        destroyed[int(text)] = dict(info)
    return windows, revoked, destroyed


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
    if escrow_recipient is not None:
        try:
            X25519Recipient.from_string(escrow_recipient)
        except ValueError:
            raise KeyringError(f"escrow recipient {escrow_recipient!r} is not an age1... recipient") from None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:  # a file in the way, no permission
        raise KeyringError(f"key directory {directory}: cannot create it ({exc.strerror})") from None
    index_path = directory / KEYRING_FILE
    index = _read_index(index_path) if index_path.exists() else {"format": KEYRING_FORMAT}
    existing = [int(m.group(1)) for p in directory.glob("age-epoch-*.key") if (m := _EPOCH_FILE.match(p.name))]
    identity_path = directory / f"age-epoch-{epoch}.key"
    if identity_path.exists():
        raise KeyringError(f"key file {identity_path} already exists; keys are never overwritten")
    if str(epoch) in index.get("destroyed_epochs", {}):
        raise KeyringError(f"epoch {epoch} was destroyed in {directory}; use a new epoch number")
    if existing and epoch < max(existing):
        raise KeyringError(f"epoch {epoch} is older than epoch {max(existing)} in {directory}")
    if escrow_recipient is not None:
        index["escrow_recipients"] = [escrow_recipient]

    identity = X25519Identity.generate()
    signing = minisign.SecretKey.generate()
    key_id = minisign.key_id_hex(signing.key_id)
    created = utcnow().isoformat()
    _write_new(identity_path, f"# created: {created}\n# public key: {identity.recipient}\n"
                              f"{identity.to_string()}\n", 0o400)
    _write_new(directory / f"signing-{key_id}.key", signing.to_file_text(), 0o400)
    _write_new(directory / f"signing-{key_id}.pub", signing.public_key.to_file_text(), 0o400)

    windows = index.setdefault("signing_keys", {})
    previous = index.get("signing_key_id")
    if previous and previous != key_id:  # rotation: the old key signs nothing from now on
        windows.setdefault(previous, {})["not_after"] = created
    windows[key_id] = {"created_at": created}
    index.update(primary_epoch=epoch, signing_key_id=key_id)
    _write_index(directory, index)
    return {
        "recipient": str(identity.recipient),
        "signing_public_key": signing.public_key.to_base64(),
        "key_id": key_id,
        "epoch": epoch,
    }


def _write_index(directory, index):
    """Replace keyring.json atomically (temp file, fsync, rename)."""
    tmp = directory / f".{KEYRING_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    _write_new(tmp, json.dumps(index, indent=2, sort_keys=True) + "\n", 0o600)
    os.replace(tmp, directory / KEYRING_FILE)


def next_epoch(directory):
    """Return the epoch a new key in `directory` gets: one more than the newest, or 1."""
    directory = Path(directory)
    epochs = [int(m.group(1)) for p in directory.glob("age-epoch-*.key") if (m := _EPOCH_FILE.match(p.name))]
    if (directory / KEYRING_FILE).exists():
        epochs += [int(e) for e in _read_index(directory / KEYRING_FILE).get("destroyed_epochs", {})
                   if str(e).isdigit()]
    return max(epochs, default=0) + 1


def revoke_signing_key(directory, key_id, *, reason=""):
    """Revoke signing key `key_id` (16 hex digits) in `directory`'s keyring.json.

    A revoked key verifies no signature, old or new, and signs nothing:
    bundles it signed must be re-signed (`bundle rewrap`) by a current key
    before the revocation, or they can no longer be opened.
    """
    directory = Path(directory)
    index = _read_index(directory / KEYRING_FILE)
    key_id = key_id.upper()
    _key_id_bytes(key_id, "revoke")
    if not (directory / f"signing-{key_id}.pub").exists() and not any(
            _read_key(p, minisign.PublicKey.from_file_text).key_id_hex == key_id
            for p in directory.glob("trusted-*.pub")):
        raise KeyringError(f"no signing key {key_id} in {directory}")
    index.setdefault("revoked_keys", {})[key_id] = {"revoked_at": utcnow().isoformat(), "reason": reason}
    _write_index(directory, index)
    return index["revoked_keys"][key_id]


def destroy_epoch(directory, epoch):
    """Destroy the age identity of `epoch` in `directory` (crypto-shredding).

    Overwrite the key file, remove it, and record the epoch and its public
    recipient under "destroyed_epochs" in keyring.json, so readers can say
    which key a bundle needed. Every bundle encrypted only for this epoch
    becomes unreadable (escrow copies aside); rewrap the bundles to keep
    first. The primary epoch cannot be destroyed. Copies of the key file
    elsewhere (backups) must be destroyed too. Return the recipient.
    """
    directory = Path(directory)
    index_path = directory / KEYRING_FILE
    index = _read_index(index_path)
    path = directory / f"age-epoch-{epoch}.key"
    if epoch == index.get("primary_epoch"):
        raise KeyringError(f"epoch {epoch} is the primary epoch; rotate (keygen) before destroying it")
    if not path.exists():
        raise KeyringError(f"key file {path} does not exist")
    recipient = str(_read_identity(path).recipient)
    size = path.stat().st_size
    os.chmod(path, 0o600)
    with open(path, "r+b") as handle:  # best effort: on copy-on-write or flash storage old blocks may survive
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
    index.setdefault("destroyed_epochs", {})[str(epoch)] = {"recipient": recipient,
                                                            "destroyed_at": utcnow().isoformat()}
    _write_index(directory, index)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return recipient
