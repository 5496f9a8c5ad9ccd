"""Seal and open bundles: JSON Lines, zlib, age, minisign (see docs/bundle-format.md).

This module works on binary streams and knows nothing of Django models or
storages; gestore_retention.bundle.store puts bundles into STORAGES.
"""
import functools
import hashlib
import hmac
import json
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from gestore_retention.errors import BundleError

from . import age, minisign

FORMAT = "gestore-retention/1"
SEAL_KEY = "seal"  # reserved trusted-comment key: {"epoch", "recipients", "signed_at"}
READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Reader limits, checked before the reader allocates for the input."""

    max_header_size: int = age.MAX_HEADER_SIZE  # bytes of age header
    max_stanzas: int = age.MAX_STANZAS
    max_line: int = 16 * 1024 * 1024  # bytes of one JSON Lines line
    max_decompressed: int = 64 * 1024 ** 3  # bytes of plaintext in total
    max_depth: int = 64  # JSON nesting of one line
    max_number: int = 1000  # characters of one JSON number
    max_signature_size: int = 16 * 1024  # bytes of the .minisig file


DEFAULT_LIMITS = Limits()


class _HashingWriter:
    """Pass writes to `out` while hashing them (SHA-256, BLAKE2b-512) and counting bytes."""

    def __init__(self, out):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.blake2b = minisign.prehash()
        self.size = 0

    def write(self, data):
        self._out.write(data)
        self.sha256.update(data)
        self.blake2b.update(data)
        self.size += len(data)
        return len(data)


class _HashingReader:
    """Read from `raw` while hashing what was read with BLAKE2b-512."""

    def __init__(self, raw):
        self._raw = raw
        self.blake2b = minisign.prehash()

    def read(self, n=-1):
        data = self._raw.read(n)
        self.blake2b.update(data)
        return data


def _dumps(value, **options):
    return json.dumps(value, separators=(",", ":"), allow_nan=False, **options)


def metadata_comment(metadata):
    """Return `metadata` as the one-line JSON trusted comment."""
    if not isinstance(metadata, dict):
        raise BundleError("bundle metadata must be a dict")
    try:
        return _dumps(metadata, sort_keys=True, ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bundle metadata is not JSON-serializable: {exc}") from None


def seal_info(keyring, now, **extra):
    """Return the reserved "seal" entry of the trusted comment: who can decrypt, when it was signed."""
    return {"epoch": keyring.primary_epoch, "recipients": [str(r) for r in keyring.recipients()],
            "signed_at": now.isoformat(), **extra}


def signed_comment(metadata, info):
    """Return the trusted comment: `metadata` plus the reserved SEAL_KEY entry `info`."""
    if isinstance(metadata, dict) and SEAL_KEY in metadata:
        raise BundleError(f"bundle metadata must not use the reserved key {SEAL_KEY!r}")
    comment = metadata_comment(metadata)  # checks it is a JSON-serializable dict
    comment = metadata_comment({**metadata, SEAL_KEY: info})
    if len(comment) > minisign.MAX_TRUSTED_COMMENT:
        raise BundleError(f"bundle metadata is longer than {minisign.MAX_TRUSTED_COMMENT} bytes as JSON")
    return comment


def split_comment(trusted):
    """Return (metadata, seal info or None) from a parsed trusted comment dict."""
    metadata = dict(trusted)
    info = metadata.pop(SEAL_KEY, None)
    return metadata, info if isinstance(info, dict) else None


def seal(out, metadata, records, keyring, *, random=os.urandom, now=None):
    """Write a sealed bundle of `records` to the binary stream `out`.

    Stream: hold one compressed chunk at a time, never the whole bundle.
    Return (signature file bytes, {model: count}). `random` and `now` (the
    signing time) are injectable for reproducible test vectors.

    The trusted comment is `metadata` plus a reserved "seal" entry: the
    key epoch and recipients the file key is wrapped for, and the signing
    time (checked against the signer's validity window). The preamble
    repeats `metadata` only, so a rewrap can change the "seal" entry.
    """
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    keyring.check_can_sign(now)
    comment = signed_comment(metadata, seal_info(keyring, now))
    tee = _HashingWriter(out)
    encryptor = age.Encryptor(tee, keyring.recipients(), random=random)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 15)
    lines_hash = hashlib.sha256()
    counts = Counter()  # {model: n}

    def emit(line):
        data = (line + "\n").encode("utf-8")
        lines_hash.update(data)
        encryptor.write(compressor.compress(data))

    emit(_dumps({"format": FORMAT, "metadata": split_comment(json.loads(comment))[0]}, ensure_ascii=False))
    for index, record in enumerate(records):
        model = record.get("model") if isinstance(record, dict) else None
        if not isinstance(model, str):
            raise BundleError(f"record {index} is not a dict with a string 'model'")
        try:
            # A record may carry its own JSON text (records.Record): it is written as it is.
            text = getattr(record, "text", None)
            emit(text if type(text) is str else _dumps(record, ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"record {index} ({model}) is not JSON-serializable: {exc}") from None
        counts[model] += 1
    manifest = {"counts": dict(sorted(counts.items())), "records": sum(counts.values()),
                "sha256": lines_hash.hexdigest()}
    encryptor.write(compressor.compress((_dumps({"manifest": manifest}) + "\n").encode("utf-8")))
    encryptor.write(compressor.flush())
    encryptor.close()
    signature = minisign.sign(keyring.signing_key, tee.blake2b.finalize(), trusted_comment=comment,
                              untrusted_comment=f"gestore-retention bundle signature, key {keyring.key_id}")
    return signature.encode(), dict(counts)


def parse_signature(label, signature_bytes):
    """Parse the .minisig bytes of bundle `label`; BundleError if malformed."""
    try:
        return minisign.Signature.parse(signature_bytes)
    except minisign.SignatureError as exc:
        raise BundleError(f"bundle {label}: signature file is malformed: {exc}") from None


@dataclass(frozen=True)
class Verified:
    """A signature that verified: file digest and size, metadata, seal info, signing time."""

    digest: bytes
    size: int
    metadata: dict  # the trusted comment without its "seal" entry
    seal: dict  # the "seal" entry ({} for bundles sealed before it existed)
    signed_at: datetime  # or None when the comment carries no time


def signing_time(metadata, info):
    """Return the signing time: seal.signed_at, else the metadata's created_at, else None."""
    for value in (info.get("signed_at"), metadata.get("created_at")):
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def verify_signature(label, open_file, signature, keyring):
    """Stream the file through BLAKE2b and check `signature` and its signer; return Verified.

    A revoked signer is refused before anything is read; a signer outside
    its validity window (at the signed signing time) once the trusted
    comment is authenticated.
    """
    if signature.key_id in keyring.revoked:
        raise BundleError(f"bundle {label}: {keyring.signer_problem(signature.key_id, None)}")
    digest = minisign.prehash()
    size = 0
    with open_file() as handle:
        while data := handle.read(READ_SIZE):
            digest.update(data)
            size += len(data)
    digest = digest.finalize()
    try:
        minisign.verify(signature, digest, keyring.trusted)
    except minisign.SignatureError as exc:
        raise BundleError(f"bundle {label}: {exc}") from None
    try:
        trusted = json.loads(signature.trusted_comment)
    except ValueError:
        trusted = None
    if not isinstance(trusted, dict):
        raise BundleError(f"bundle {label}: trusted comment is not a JSON object of metadata")
    metadata, info = split_comment(trusted)
    info = info or {}
    signed_at = signing_time(metadata, info)
    problem = keyring.signer_problem(signature.key_id, signed_at)
    if problem:
        raise BundleError(f"bundle {label}: {problem}")
    return Verified(digest, size, metadata, info, signed_at)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


# One decoder for the process: json.loads with options builds a new one per line.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


class _NumberTooLong(ValueError):
    pass


@functools.lru_cache(maxsize=8)
def _long_digits(limit):
    return re.compile(rb"[0-9]{%d}" % max(1, limit // 2))


def _bounded(parse, limit):
    def parse_number(text):
        if len(text) > limit:
            raise _NumberTooLong(f"a number is longer than the limit of {limit} characters")
        return parse(text)
    return parse_number


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep(line, limit):
    """Return True if the JSON text `line` nests deeper than `limit`, checked before parsing.

    Lines with few brackets (nearly all) are cleared by two C-speed counts;
    others are scanned token by token (strings skipped), never parsed.
    """
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(line):
        char = match.group()[0]
        if char in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif char in b"]}":
            depth -= 1
    return False


def no_identity_message(info, keyring):
    """Explain why no identity of `keyring` unwraps the file key, from the signed seal info."""
    recipients = info.get("recipients") if isinstance(info.get("recipients"), list) else []
    epoch = info.get("epoch")
    if not recipients or not isinstance(epoch, int):
        return "no key in the key ring can decrypt it (wrong key, or its epoch key was destroyed)"
    primary, escrow = recipients[0], recipients[1:]
    also = f"; escrow recipient(s) {', '.join(escrow)} can still decrypt it" if escrow else ""
    if any(str(identity.recipient) == primary for identity in keyring.identities.values()):
        return (f"the recipient stanza for key epoch {epoch} ({primary}) does not unwrap with that "
                f"epoch's identity: the header is damaged or forged")
    destroyed = keyring.destroyed.get(epoch)
    if destroyed and destroyed.get("recipient") == primary:
        return (f"encrypted for key epoch {epoch} ({primary}), which was destroyed on "
                f"{destroyed.get('destroyed_at', '?')}: the bundle is crypto-shredded{also}")
    return (f"encrypted for key epoch {epoch} ({primary}), whose identity is not in the key ring: "
            f"it was destroyed or never here{also}")


class OpenedBundle:
    """A bundle whose signature verified; records() streams and checks the rest.

    Use it as a context manager, or iterate records() to the end, to close the file.
    """

    def __init__(self, label, open_file, signature, keyring, *, limits=DEFAULT_LIMITS):
        self.label = label
        self.limits = limits
        self.manifest = None  # set once records() is exhausted and checked
        self.signature = signature
        self.signer_key_id = signature.key_id_hex
        verified = verify_signature(label, open_file, signature, keyring)
        self._digest, self.size, trusted_metadata = verified.digest, verified.size, verified.metadata
        self.seal = verified.seal  # {"epoch", "recipients", "signed_at"} or {} for older bundles
        self.signed_at = verified.signed_at
        self._keyring = keyring
        self.epoch = None  # the key ring epoch whose identity decrypted it
        self._handle = open_file()
        try:
            self._reader = _HashingReader(self._handle)
            try:
                self._decryptor = age.Decryptor(self._reader, keyring.decryption_identities(),
                                                max_header_size=limits.max_header_size,
                                                max_stanzas=limits.max_stanzas)
            except age.AgeError as exc:
                raise self._age_error(exc) from None
            self.epoch = next((e for e, i in keyring.identities.items() if i is self._decryptor.identity), None)
            self._decompressor = zlib.decompressobj(15)
            self._lines_hash = hashlib.sha256()
            self._lines = self._iter_lines()
            self._records_started = False
            preamble = self._next_json(next(self._lines, None), 1)
            if (not isinstance(preamble, dict) or set(preamble) != {"format", "metadata"}):
                raise self._error("first line is not the preamble")
            if preamble["format"] != FORMAT:
                raise self._error(f"unsupported format {str(preamble['format'])[:40]!r} (expected {FORMAT!r})")
            if preamble["metadata"] != trusted_metadata:
                raise self._error("preamble metadata differs from the signed trusted comment")
            self.metadata = trusted_metadata
        except BaseException:
            self.close()
            raise

    def _error(self, what):
        return BundleError(f"bundle {self.label}: {what}")

    def _age_error(self, exc):
        if isinstance(exc, age.NoIdentityMatch):
            return self._error(no_identity_message(self.seal, self._keyring))
        if isinstance(exc, age.HeaderMacError):
            return self._error("age header MAC does not verify")
        if isinstance(exc, age.HeaderError):
            return self._error(f"age header is invalid: {exc}")
        return self._error(str(exc))

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _plaintext(self):
        """Yield decompressed plaintext in bounded pieces."""
        total = 0
        limit = self.limits.max_decompressed
        decompressor = self._decompressor
        try:
            for chunk in self._decryptor.chunks():
                data = chunk
                while data:
                    if decompressor.eof:
                        raise self._error("trailing data after the compressed stream")
                    try:
                        out = decompressor.decompress(data, age.CHUNK_SIZE)
                    except zlib.error as exc:
                        raise self._error(f"compressed stream is corrupt: {exc}") from None
                    data = decompressor.unconsumed_tail
                    total += len(out)
                    if total > limit:
                        raise self._error(f"decompressed size exceeds the limit of {limit} bytes")
                    if out:
                        yield out
        except age.AgeError as exc:
            raise self._age_error(exc) from None
        if not decompressor.eof:
            raise self._error("compressed stream is truncated")
        if decompressor.unused_data:
            raise self._error("trailing data after the compressed stream")

    def _iter_lines(self):
        buffer = bytearray()
        limit = self.limits.max_line
        for piece in self._plaintext():
            buffer += piece
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                if end - start > limit:
                    raise self._error(f"a line is longer than the limit of {limit} bytes")
                yield bytes(buffer[start:end + 1])
                start = end + 1
            del buffer[:start]
            if len(buffer) > limit:
                raise self._error(f"a line is longer than the limit of {limit} bytes")
        if buffer:
            raise self._error("plaintext does not end with a newline")

    def _next_json(self, line, number):
        if line is None:
            raise self._error("plaintext is empty")
        if _too_deep(line, self.limits.max_depth):
            raise self._error(f"line {number} is nested deeper than {self.limits.max_depth}")
        limit = self.limits.max_number
        try:
            if _long_digits(limit).search(line):  # cheap pre-check; the hooks decide exactly
                value = json.loads(line, parse_constant=_reject_constant,
                                   parse_int=_bounded(int, limit), parse_float=_bounded(float, limit))
            else:
                value = _decode(line.decode("utf-8"))
        except RecursionError:
            raise self._error(f"line {number} is nested deeper than {self.limits.max_depth}") from None
        except _NumberTooLong as exc:
            raise self._error(f"line {number}: {exc}") from None
        except ValueError as exc:
            raise self._error(f"line {number} is not valid JSON: {exc}") from None
        self._lines_hash.update(line)
        return value

    def records(self):
        """Yield each record (a dict with a 'model' key), then check the manifest.

        Raise BundleError if anything after the last record is wrong: the
        manifest (counts, record total, SHA-256 of the lines), trailing data,
        a missing final chunk, or a file that changed since its signature was
        checked. Callers MUST NOT trust the records before the iteration ends.
        """
        if self._records_started:
            raise self._error("records() can be iterated only once")
        self._records_started = True
        counts = Counter()  # {model: n}
        number = 1
        manifest = None
        try:
            for line in self._lines:
                number += 1
                if manifest is not None:
                    raise self._error(f"line {number} follows the manifest")
                lines_sha256 = self._lines_hash.hexdigest()
                value = self._next_json(line, number)
                if isinstance(value, dict) and isinstance(value.get("model"), str):
                    counts[value["model"]] += 1
                    yield value
                elif isinstance(value, dict) and set(value) == {"manifest"} and isinstance(value["manifest"], dict):
                    manifest = value["manifest"]
                else:
                    raise self._error(f"line {number} is neither a record nor the manifest")
            if manifest is None:
                raise self._error("bundle ends without a manifest")
            if manifest.get("counts") != dict(counts):
                raise self._error(f"manifest counts {manifest.get('counts')} do not match the records {dict(counts)}")
            if manifest.get("records") != sum(counts.values()):
                raise self._error(f"manifest says {manifest.get('records')} records, found {sum(counts.values())}")
            if not isinstance(manifest.get("sha256"), str) or not hmac.compare_digest(manifest["sha256"], lines_sha256):
                raise self._error("manifest sha256 does not match the lines")
            if not hmac.compare_digest(self._reader.blake2b.finalize(), self._digest):
                raise self._error("file changed between signature check and decryption")
            self.manifest = manifest
        finally:
            self.close()


def describe(label, stream, signature_bytes, *, size=None, keyring=None, limits=DEFAULT_LIMITS):
    """Return header and signature facts of a bundle without decrypting it.

    The metadata comes from the trusted comment; it is verified only when a
    `keyring` is given and `signature_verified` is True.
    """
    try:
        header = age.read_header(stream, max_size=limits.max_header_size, max_stanzas=limits.max_stanzas)
    except age.HeaderError as exc:
        raise BundleError(f"bundle {label}: age header is invalid: {exc}") from None
    signature = parse_signature(label, signature_bytes)
    try:
        metadata = json.loads(signature.trusted_comment)
    except ValueError:
        metadata = None
    info = None
    if isinstance(metadata, dict):
        metadata, info = split_comment(metadata)
    epoch = None
    if keyring is not None:  # which epoch's identity unwraps the file key (the payload stays encrypted)
        for number, identity in sorted(keyring.identities.items()):
            try:
                age.unwrap(header, [identity])
            except age.AgeError:
                continue
            epoch = number
            break
    return {
        "name": label,
        "size": size,
        "format": age.VERSION_LINE.decode(),
        "header_size": header.size,
        "recipients": [{"type": s.type, "arguments": len(s.args)} for s in header.stanzas],
        "signer_key_id": signature.key_id_hex,
        "signature_algorithm": signature.algorithm.decode(),
        "untrusted_comment": signature.untrusted_comment,
        "trusted_comment": signature.trusted_comment,
        "metadata": metadata,
        "seal": info,
        "signer_trusted": None if keyring is None else signature.key_id in keyring.trusted,
        "signer_revoked": None if keyring is None else signature.key_id in keyring.revoked,
        "decrypts_with_epoch": epoch,
    }
