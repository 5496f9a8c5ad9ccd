"""age v1 file format (age-encryption.org/v1) with X25519 recipients.

A small, streaming implementation of the C2SP age specification on top of the
`cryptography` package: header parsing and writing, X25519 stanzas, the header
MAC and the STREAM payload (64 KiB ChaCha20-Poly1305 chunks). It is checked
against the CCTV test vectors (tests/test_bundle_age.py) and against pyrage.

Not implemented: scrypt (passphrase) and hybrid post-quantum recipients, ASCII
armor. Such stanzas are skipped like any unknown stanza.

Every failure raises a subclass of AgeError, named after the stage that failed,
so callers can tell a damaged header from a wrong key from a damaged payload.
"""
import base64
import hmac as _hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import bech32

VERSION_LINE = b"age-encryption.org/v1"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
BODY_COLUMNS = 64
MAX_HEADER_SIZE = 64 * 1024
MAX_STANZAS = 32
X25519_LABEL = b"age-encryption.org/v1/X25519"
IDENTITY_HRP = "age-secret-key-"
RECIPIENT_HRP = "age"


class AgeError(Exception):
    """The age file cannot be decrypted; subclasses name the stage."""


class HeaderError(AgeError):
    """The header is malformed, truncated, too large or uses a bad X25519 share."""


class NoIdentityMatch(AgeError):
    """No identity unwraps any recipient stanza (wrong key)."""


class HeaderMacError(AgeError):
    """The header MAC does not verify: the header was changed."""


class PayloadError(AgeError):
    """The STREAM payload is damaged, truncated or has trailing data."""


# -- base64: standard alphabet, no padding, canonical only -----------------

_B64 = re.compile(rb"[A-Za-z0-9+/]*\Z")


def b64encode(data):
    """Return unpadded standard base64 of `data` as str."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text):
    """Decode unpadded, canonical standard base64; raise HeaderError otherwise."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    if not _B64.match(text) or len(text) % 4 == 1:
        raise HeaderError(f"invalid base64 {text[:80]!r}")
    raw = base64.b64decode(text + b"=" * (-len(text) % 4))
    if b64encode(raw).encode("ascii") != text:
        raise HeaderError(f"non-canonical base64 {text[:80]!r}")
    return raw


def _hkdf(ikm, salt, info, length=32):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _header_mac(file_key, header_bytes):
    mac = HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(header_bytes)
    return mac.finalize()


def _chunk_nonce(counter, last):
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# -- stanzas and header ----------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: `-> type args...` and a binary body."""

    type: str
    args: tuple
    body: bytes

    def encode(self):
        """Return the stanza as header bytes, body wrapped at 64 columns."""
        text = b64encode(self.body)
        lines = [text[i:i + BODY_COLUMNS] for i in range(0, len(text), BODY_COLUMNS)]
        if not lines or len(lines[-1]) == BODY_COLUMNS:
            lines.append("")  # the body always ends with a short (maybe empty) line
        out = "-> " + " ".join((self.type, *self.args)) + "\n" + "".join(line + "\n" for line in lines)
        return out.encode("ascii")


@dataclass(frozen=True)
class Header:
    """A parsed header: stanzas, MAC, the bytes the MAC covers, total size."""

    stanzas: tuple
    mac: bytes
    mac_input: bytes
    size: int


class _Source:
    """Buffered reader over any object with read(n): exact reads and bounded lines."""

    def __init__(self, raw):
        self._raw = raw
        self._buf = bytearray()
        self.position = 0  # bytes handed out so far

    def _fill(self, n):
        while len(self._buf) < n:
            data = self._raw.read(max(n - len(self._buf), 8192))
            if not data:
                return
            self._buf += data

    def read(self, n):
        """Return up to n bytes; fewer only at end of file."""
        if not self._buf:  # the common case while streaming chunks: no copy through the buffer
            data = self._raw.read(n)
            if len(data) == n or not data:
                self.position += len(data)
                return data
            self._buf += data
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.position += len(out)
        return out

    def readline(self, limit):
        """Return one line incl. its newline, at most `limit` bytes."""
        start = 0
        while True:
            idx = self._buf.find(b"\n", start, limit)
            if idx >= 0:
                return self.read(idx + 1)
            start = len(self._buf)
            if start >= limit:
                return self.read(limit)
            before = len(self._buf)
            self._fill(before + 1)
            if len(self._buf) == before:
                return self.read(before)


def _is_arg(arg):
    return bool(arg) and all(0x21 <= b <= 0x7E for b in arg)


def read_header(source, *, max_size=MAX_HEADER_SIZE, max_stanzas=MAX_STANZAS):
    """Parse an age header from `source` (a _Source or a binary file); return Header.

    Read nothing past the header. Enforce `max_size` bytes and `max_stanzas`
    stanzas before allocating more.
    """
    if not isinstance(source, _Source):
        source = _Source(source)
    raw = []  # header lines as read, for the MAC
    used = 0

    def next_line(what):
        nonlocal used
        line = source.readline(max_size - used + 1)
        used += len(line)
        if used > max_size:
            raise HeaderError(f"header is larger than {max_size} bytes")
        if not line.endswith(b"\n"):
            raise HeaderError("file is empty" if used == 0 else f"header is truncated in {what}")
        raw.append(line)
        return line[:-1]

    version = next_line("the version line")
    if version != VERSION_LINE:
        raise HeaderError(f"unsupported version line {version[:40]!r}")
    stanzas = []
    while True:
        line = next_line("a stanza")
        if line.startswith(b"--- "):
            mac = b64decode(line[4:])
            if len(mac) != 32:
                raise HeaderError("header MAC is not 32 bytes")
            mac_input = b"".join(raw)[:-len(line) - 1] + b"---"
            return Header(tuple(stanzas), mac, mac_input, used)
        if not line.startswith(b"-> "):
            raise HeaderError(f"unexpected header line {line[:40]!r}")
        if len(stanzas) >= max_stanzas:
            raise HeaderError(f"header has more than {max_stanzas} stanzas")
        args = line[3:].split(b" ")
        if not all(_is_arg(arg) for arg in args):
            raise HeaderError(f"malformed stanza line {line[:40]!r}")
        body = []
        while True:
            text = next_line("a stanza body")
            if len(text) > BODY_COLUMNS:
                raise HeaderError("stanza body line is longer than 64 columns")
            body.append(b64decode(text))
            if len(text) < BODY_COLUMNS:
                break
        names = [arg.decode("ascii") for arg in args]
        stanzas.append(Stanza(names[0], tuple(names[1:]), b"".join(body)))


# -- X25519 recipients and identities --------------------------------------


class X25519Recipient:
    """An `age1...` public key: wraps a file key for its identity."""

    def __init__(self, public_key):
        self._public = public_key
        self.public_bytes = public_key.public_bytes_raw()

    @classmethod
    def from_string(cls, text):
        """Parse `age1...`; raise ValueError if it is not an X25519 recipient."""
        hrp, data = bech32.decode(text)
        if hrp != RECIPIENT_HRP or text != text.lower() or len(data) != 32:
            raise ValueError(f"not an age X25519 recipient: {text[:20]!r}")
        return cls(X25519PublicKey.from_public_bytes(data))

    def to_string(self):
        return bech32.encode(RECIPIENT_HRP, self.public_bytes)

    __str__ = to_string

    def __eq__(self, other):
        return isinstance(other, X25519Recipient) and other.public_bytes == self.public_bytes

    def __hash__(self):
        return hash(self.public_bytes)

    def wrap(self, file_key, *, random=os.urandom):
        """Return the X25519 stanza carrying `file_key` for this recipient."""
        ephemeral = X25519PrivateKey.from_private_bytes(random(32))
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(self._public)
        wrap_key = _hkdf(shared, share + self.public_bytes, X25519_LABEL)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        return Stanza("X25519", (b64encode(share),), body)


class X25519Identity:
    """An `AGE-SECRET-KEY-1...` private key: unwraps X25519 stanzas."""

    def __init__(self, private_key):
        self._private = private_key
        self.recipient = X25519Recipient(private_key.public_key())

    @classmethod
    def generate(cls):
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_string(cls, text):
        """Parse `AGE-SECRET-KEY-1...`; raise ValueError if it is not one."""
        hrp, data = bech32.decode(text)
        if hrp != IDENTITY_HRP or text != text.upper() or len(data) != 32:
            raise ValueError("not an age X25519 identity")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def to_string(self):
        return bech32.encode(IDENTITY_HRP, self._private.private_bytes_raw()).upper()

    def __repr__(self):
        return f"<X25519Identity {self.recipient}>"  # never the secret

    def unwrap(self, stanzas):
        """Return the file key from the first X25519 stanza meant for us, or None.

        A malformed X25519 stanza (argument count, share or body size, a
        low-order share) raises HeaderError; one for another key is skipped.
        """
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise HeaderError("X25519 stanza must have exactly one argument")
            share = b64decode(stanza.args[0])
            if len(share) != 32:
                raise HeaderError("X25519 share is not 32 bytes")
            if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
                raise HeaderError("X25519 stanza body is not 32 bytes")
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                raise HeaderError("X25519 share is a low-order point") from None
            if shared == bytes(32):
                raise HeaderError("X25519 share is a low-order point")
            wrap_key = _hkdf(shared, share + self.recipient.public_bytes, X25519_LABEL)
            try:
                return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), stanza.body, None)
            except InvalidTag:
                continue
        return None


# -- header: write, and unwrap the file key --------------------------------


def write_header(file_key, recipients, *, random=os.urandom):
    """Return the header bytes (version, one stanza per recipient, MAC line) for `file_key`."""
    if not recipients:
        raise ValueError("age encryption needs at least one recipient")
    header = VERSION_LINE + b"\n"
    header += b"".join(r.wrap(file_key, random=random).encode() for r in recipients)
    header += b"---"
    return header + b" " + b64encode(_header_mac(file_key, header)).encode("ascii") + b"\n"


def unwrap(header, identities):
    """Return (file key, identity) for the first identity that unwraps a stanza of `header`.

    Raise NoIdentityMatch if none does, HeaderMacError if the header MAC
    does not verify with the file key.
    """
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            break
    else:
        raise NoIdentityMatch("no identity matches a recipient stanza")
    if not _hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
        raise HeaderMacError("header MAC does not verify")
    return file_key, identity


# -- encryption ------------------------------------------------------------


class Encryptor:
    """Write an age file to `out` as data arrives; hold at most one chunk.

    Call write() any number of times, then close() (which does not close
    `out`). `random` can be injected for deterministic test vectors.
    """

    def __init__(self, out, recipients, *, random=os.urandom):
        if not recipients:
            raise ValueError("age encryption needs at least one recipient")
        file_key = random(FILE_KEY_SIZE)
        out.write(write_header(file_key, recipients, random=random))
        nonce = random(NONCE_SIZE)
        out.write(nonce)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._out = out
        self._buf = bytearray()
        self._counter = 0
        self._closed = False

    def write(self, data):
        if self._closed:
            raise ValueError("write to a closed age Encryptor")
        self._buf += data
        # Keep the last full chunk back: only close() knows whether it is final.
        while len(self._buf) > CHUNK_SIZE:
            self._emit(bytes(self._buf[:CHUNK_SIZE]), last=False)
            del self._buf[:CHUNK_SIZE]
        return len(data)

    def close(self):
        if not self._closed:
            self._emit(bytes(self._buf), last=True)
            self._buf = bytearray()
            self._closed = True

    def _emit(self, chunk, last):
        self._out.write(self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None))
        self._counter += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()


def encrypt(out, recipients, *, random=os.urandom):
    """Return an Encryptor writing to `out` for `recipients`."""
    return Encryptor(out, recipients, random=random)


# -- decryption ------------------------------------------------------------


class Decryptor:
    """Read an age file: parse and authenticate the header at construction,
    then stream plaintext chunks with chunks()."""

    def __init__(self, stream, identities, *, max_header_size=MAX_HEADER_SIZE, max_stanzas=MAX_STANZAS):
        self._src = _Source(stream)
        self.header = read_header(self._src, max_size=max_header_size, max_stanzas=max_stanzas)
        file_key, self.identity = unwrap(self.header, identities)  # the identity that matched
        nonce = self._src.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise HeaderError("file is truncated before the payload nonce")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self.chunk_count = 0
        self.finished = False

    def chunks(self):
        """Yield plaintext chunks; raise PayloadError at the first bad one.

        Plaintext is released only after its chunk authenticates. The end is
        reached only through a chunk with the last-chunk flag and no data after it.
        """
        counter = 0
        data = self._src.read(ENC_CHUNK_SIZE)
        if not data:
            raise PayloadError("payload has no chunks")
        while True:
            if len(data) < TAG_SIZE:
                raise PayloadError(f"chunk {counter} is truncated")
            if len(data) == ENC_CHUNK_SIZE:
                last = False
                try:
                    plain = self._aead.decrypt(_chunk_nonce(counter, False), data, None)
                except InvalidTag:
                    last = True  # a full-size final chunk
                    plain = self._open_last(data, counter)
            else:
                last = True
                if counter > 0 and len(data) == TAG_SIZE:
                    raise PayloadError(f"final chunk {counter} is empty")
                plain = self._open_last(data, counter)
            self.chunk_count = counter + 1
            yield plain
            if last:
                if self._src.read(1):
                    raise PayloadError(f"trailing data after the final chunk {counter}")
                self.finished = True
                return
            counter += 1
            data = self._src.read(ENC_CHUNK_SIZE)
            if not data:
                raise PayloadError(f"file is truncated: no final chunk after chunk {counter - 1}")

    def _open_last(self, data, counter):
        try:
            return self._aead.decrypt(_chunk_nonce(counter, True), data, None)
        except InvalidTag:
            raise PayloadError(f"chunk {counter} failed authentication") from None


def decrypt(stream, identities, **limits):
    """Return a Decryptor over the binary file `stream` for `identities`."""
    return Decryptor(stream, identities, **limits)
