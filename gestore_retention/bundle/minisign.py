"""minisign key and signature files (Ed25519, prehashed "ED" signatures).

Compatible with the stock `minisign` tool: `minisign -V -p signing-<id>.pub -m
<file>` verifies our signatures, and our unencrypted secret key file is
minisign's own unencrypted layout (as written by `minisign -G -W`).

Signature file:

    untrusted comment: <text>
    base64("ED" | key_id(8) | Ed25519(BLAKE2b-512(file)))
    trusted comment: <text>
    base64(Ed25519(signature(64) | trusted comment bytes))
"""
import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ALG = b"Ed"
SIG_ALG_PREHASHED = b"ED"
KDF_NONE = b"\x00\x00"
CHK_ALG = b"B2"
UNTRUSTED = "untrusted comment: "
TRUSTED = "trusted comment: "
MAX_TRUSTED_COMMENT = 8000  # minisign reads at most 8192 bytes per trusted comment line


class SignatureError(Exception):
    """A key or signature file is malformed, or a signature does not verify."""


def key_id_hex(key_id):
    """Return the 8-byte key id as minisign prints it (little-endian, hex, upper)."""
    return f"{int.from_bytes(key_id, 'little'):016X}"


def key_id_from_hex(text):
    return int(text, 16).to_bytes(8, "little")


def prehash():
    """Return a fresh BLAKE2b-512 hash object: feed it the file, in pieces."""
    return hashes.Hash(hashes.BLAKE2b(64))


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text, what):
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None


def _two_lines(text, what):
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) < 2 or not lines[0].startswith(UNTRUSTED):
        raise SignatureError(f"{what} does not start with {UNTRUSTED.strip()!r}")
    return lines[0][len(UNTRUSTED):], lines[1]


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    key: Ed25519PublicKey

    @property
    def key_id_hex(self):
        return key_id_hex(self.key_id)

    def to_base64(self):
        return _b64(KEY_ALG + self.key_id + self.key.public_bytes_raw())

    def to_file_text(self):
        return f"{UNTRUSTED}minisign public key {self.key_id_hex}\n{self.to_base64()}\n"

    @classmethod
    def from_base64(cls, text):
        raw = _unb64(text, "public key")
        if len(raw) != 42 or raw[:2] != KEY_ALG:
            raise SignatureError("public key is not a minisign Ed25519 key")
        return cls(raw[2:10], Ed25519PublicKey.from_public_bytes(raw[10:]))

    @classmethod
    def from_file_text(cls, text):
        return cls.from_base64(_two_lines(text, "public key file")[1])


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls):
        return cls(os.urandom(8), Ed25519PrivateKey.generate())

    @property
    def public_key(self):
        return PublicKey(self.key_id, self.key.public_key())

    def __repr__(self):
        return f"<minisign SecretKey {key_id_hex(self.key_id)}>"  # never the secret

    def _keypair(self):
        return self.key.private_bytes_raw() + self.key.public_key().public_bytes_raw()

    def _checksum(self):
        return hashlib.blake2b(KEY_ALG + self.key_id + self._keypair(), digest_size=32).digest()

    def to_file_text(self):
        """Return minisign's unencrypted secret key file (kdf "\\0\\0").

        We fill in the BLAKE2b-256 checksum, which stock minisign leaves zero
        for unencrypted keys and never checks; both read back.
        """
        raw = (KEY_ALG + KDF_NONE + CHK_ALG + bytes(32) + bytes(8) + bytes(8)
               + self.key_id + self._keypair() + self._checksum())
        return f"{UNTRUSTED}minisign secret key {key_id_hex(self.key_id)}\n{_b64(raw)}\n"

    @classmethod
    def from_file_text(cls, text):
        raw = _unb64(_two_lines(text, "secret key file")[1], "secret key")
        if len(raw) != 158 or raw[:2] != KEY_ALG or raw[4:6] != CHK_ALG:
            raise SignatureError("secret key is not a minisign Ed25519 secret key")
        if raw[2:4] != KDF_NONE:
            raise SignatureError("secret key is password-encrypted; write an unencrypted one (minisign -G -W)")
        key_id, keypair, checksum = raw[54:62], raw[62:126], raw[126:158]
        secret = cls(key_id, Ed25519PrivateKey.from_private_bytes(keypair[:32]))
        if secret._keypair() != keypair:
            raise SignatureError("secret key's public half does not match its seed")
        # Stock `minisign -G -W` leaves the checksum of an unencrypted key all zero (it computes it only
        # when encrypting); we write the real one. Accept either, refuse anything else.
        if checksum != bytes(32) and not hmac.compare_digest(secret._checksum(), checksum):
            raise SignatureError("secret key checksum does not match")
        return secret


@dataclass(frozen=True)
class Signature:
    algorithm: bytes
    key_id: bytes
    signature: bytes
    untrusted_comment: str
    trusted_comment: str
    global_signature: bytes

    @property
    def key_id_hex(self):
        return key_id_hex(self.key_id)

    def encode(self):
        return (f"{UNTRUSTED}{self.untrusted_comment}\n"
                f"{_b64(self.algorithm + self.key_id + self.signature)}\n"
                f"{TRUSTED}{self.trusted_comment}\n"
                f"{_b64(self.global_signature)}\n").encode("utf-8")

    @classmethod
    def parse(cls, data):
        """Parse a .minisig file's bytes; raise SignatureError if malformed."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("signature file is not UTF-8 text") from None
        untrusted, sig_line = _two_lines(text, "signature file")
        lines = text.replace("\r\n", "\n").split("\n")
        if len(lines) < 4 or not lines[2].startswith(TRUSTED) or any(lines[4:]):
            raise SignatureError("signature file does not have the four minisign lines")
        raw = _unb64(sig_line, "signature")
        if len(raw) != 74:
            raise SignatureError("signature is not 74 bytes")
        if raw[:2] != SIG_ALG_PREHASHED:
            raise SignatureError(f"signature algorithm {raw[:2]!r} is not the prehashed 'ED'")
        global_sig = _unb64(lines[3], "trusted comment signature")
        if len(global_sig) != 64:
            raise SignatureError("trusted comment signature is not 64 bytes")
        return cls(raw[:2], raw[2:10], raw[10:], untrusted, lines[2][len(TRUSTED):], global_sig)


def sign(secret_key, digest, *, trusted_comment, untrusted_comment="signature from gestore-retention"):
    """Return a Signature over a BLAKE2b-512 `digest` with `trusted_comment`."""
    if "\n" in trusted_comment or "\r" in trusted_comment or "\n" in untrusted_comment:
        raise SignatureError("comments must be one line")
    if len(trusted_comment.encode("utf-8")) > MAX_TRUSTED_COMMENT:
        raise SignatureError(f"trusted comment is longer than {MAX_TRUSTED_COMMENT} bytes")
    signature = secret_key.key.sign(digest)
    global_sig = secret_key.key.sign(signature + trusted_comment.encode("utf-8"))
    return Signature(SIG_ALG_PREHASHED, secret_key.key_id, signature, untrusted_comment, trusted_comment, global_sig)


def verify(signature, digest, trusted_keys):
    """Check `signature` over `digest` with the key of its id; return that PublicKey.

    `trusted_keys` maps 8-byte key ids to PublicKey. Raise SignatureError
    naming what failed: unknown signer, file signature, trusted comment.
    """
    public = trusted_keys.get(signature.key_id)
    if public is None:
        raise SignatureError(f"signed by key {signature.key_id_hex}, which is not a trusted key")
    try:
        public.key.verify(signature.signature, digest)
    except InvalidSignature:
        raise SignatureError(
            f"signature does not verify with any trusted key (signer id {signature.key_id_hex})") from None
    try:
        public.key.verify(signature.global_signature,
                          signature.signature + signature.trusted_comment.encode("utf-8"))
    except InvalidSignature:
        raise SignatureError("trusted comment does not verify (it was edited)") from None
    return public
