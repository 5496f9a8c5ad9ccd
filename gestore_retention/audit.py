"""The audit log: append-only, hash-chained events, and their verification.

Each event stores the hash of the one before it (`prev_hash`, 64 zeros for
the first) and its own hash over every field, so changing, deleting or
reordering a stored event breaks the chain at that event. `seq` and
`prev_hash` are unique in the database: two writers that read the same last
event cannot both append after it; the loser retries on the new head.

Events hold no personal data. The log is kept for as long as the erasures it
proves must be provable, and an event cannot be edited without breaking the
chain, so anything written into it could never be erased again. That is why
`details` only admits numbers, booleans and short id-like strings: counts,
bundle and hold ids, key ids. A model label and a primary key name the
subject; names, e-mail addresses and free text never enter.
"""
import dataclasses
import datetime as dt
import hashlib
import json
import math
import random
import re
import time

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from gestore_retention.errors import RetentionError
from gestore_retention.models import AuditEvent

GENESIS = "0" * 64
ID_RE = re.compile(r"^[A-Za-z0-9_.:\-/+]*$")
MAX_ID = 64
MAX_DEPTH = 4
RETRIES = 20
HASHED = ("seq", "prev_hash", "created_at", "action", "outcome", "subject_label",
          "subject_pk", "policy", "policy_hash", "bundle_id", "details")


def _check_details(value, path="details", depth=0):
    """Raise ValueError unless `value` is numbers, booleans, None and short ids, nested shallowly."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit {path}: {value!r} is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_ID or not ID_RE.match(value):
            raise ValueError(
                f"audit {path}: only ids, counts and flags are allowed (no personal data); "
                f"a string must be at most {MAX_ID} characters of A-Z a-z 0-9 _ . : - / +"
            )
        return
    if depth >= MAX_DEPTH:
        raise ValueError(f"audit {path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > MAX_ID or not ID_RE.match(key):
                raise ValueError(f"audit {path}: key {key!r} is not an id-like string")
            _check_details(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_details(item, f"{path}[{i}]", depth + 1)
        return
    raise ValueError(f"audit {path}: a {type(value).__name__} is not allowed (ids, counts and flags only)")


def _field_text(value, name, limit):
    value = "" if value is None else str(value)
    if len(value) > limit:
        raise ValueError(f"audit {name}: longer than {limit} characters")
    return value


def compute_hash(fields):
    """Return the SHA-256 hex of an event's fields (a dict keyed by HASHED) as canonical JSON."""
    data = {name: fields[name] for name in HASHED}
    data["created_at"] = fields["created_at"].astimezone(dt.timezone.utc).isoformat()
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _event_fields(event):
    return {name: getattr(event, name) for name in HASHED}


def _head(using):
    """The newest event's seq and hash, or None for an empty log."""
    return AuditEvent.objects.using(using).order_by("-seq").values("seq", "hash").first()


def append(action, *, subject_label="", subject_pk="", outcome="ok", policy="", policy_hash="",
           bundle_id="", details=None, now=None, using="default"):
    """Append one event after the current head of the chain and return it.

    Call it inside the transaction of the step it records: the event commits
    or rolls back with the step. Concurrent appends are serialised by the
    unique `seq`/`prev_hash` columns; a writer that loses the race retries
    inside a savepoint on the new head. `details` must hold no personal data
    (ValueError otherwise).
    """
    details = {} if details is None else details
    _check_details(details)
    # Normalise through JSON so the hash covers what the database returns.
    details = json.loads(json.dumps(details, allow_nan=False))
    for name, value in (("action", action), ("outcome", outcome)):
        if not value or len(value) > 40 or not ID_RE.match(value):
            raise ValueError(f"audit {name}: {value!r} is not a short id-like word")
    fields = {
        "action": action,
        "outcome": outcome,
        "subject_label": _field_text(subject_label, "subject_label", 200),
        "subject_pk": _field_text(subject_pk, "subject_pk", 200),
        "policy": _field_text(policy, "policy", 100),
        "policy_hash": _field_text(policy_hash, "policy_hash", 64),
        "bundle_id": _field_text(bundle_id, "bundle_id", 40),
        "details": details,
        # Microseconds survive every backend (MySQL DATETIME(6) included).
        "created_at": (now or timezone.now()).astimezone(dt.timezone.utc),
    }
    last_error = None
    for attempt in range(RETRIES):
        try:
            with transaction.atomic(using=using):
                head = _head(using)
                fields["seq"] = head["seq"] + 1 if head else 1
                fields["prev_hash"] = head["hash"] if head else GENESIS
                fields["hash"] = compute_hash(fields)
                return AuditEvent.objects.using(using).create(**fields)
        except IntegrityError as exc:  # another writer took this seq: retry on the new head
            last_error = exc
        except DatabaseError as exc:
            # SQLite's shared-cache test database reports a busy table at once
            # instead of waiting; treat it like a lost race. Other errors raise.
            if connections[using].vendor != "sqlite" or "locked" not in str(exc):
                raise
            last_error = exc
        time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
    raise RetentionError(f"audit: could not append {action!r} after {RETRIES} attempts: {last_error}")


@dataclasses.dataclass(frozen=True)
class ChainReport:
    """The outcome of `verify_chain()`."""

    ok: bool
    events: int               # events checked (up to and including the first bad one)
    first_bad_seq: int | None
    message: str
    last_hash: str = ""       # head of the verified chain: keep it elsewhere to detect truncation

    def __str__(self):
        if self.ok:
            return f"audit chain ok: {self.events} events, head {self.last_hash[:16] or '-'}"
        return f"audit chain BROKEN at event #{self.first_bad_seq}: {self.message}"


def known_head_error(known_head):
    """Why `known_head` is not a head hash or a prefix of one ("" when it is)."""
    known_head = known_head.strip().lower()
    if len(known_head) < 16 or any(c not in "0123456789abcdef" for c in known_head):
        return "give at least 16 hex digits of a head hash"
    return ""


def verify_chain(*, using="default", chunk_size=2000, known_head=""):
    """Recompute the chain from the first event and return a ChainReport.

    Streams events in seq order. Detects a changed field (hash mismatch), a
    deleted or reordered event (seq gap or prev_hash mismatch). Deleting the
    newest events leaves a shorter valid chain: pass `known_head`, a head
    (or its first 16+ hex digits) recorded earlier outside the database, and
    the chain must still contain it. This is a read-only operation.
    """
    known_head = known_head.strip().lower()
    if known_head and (problem := known_head_error(known_head)):
        return ChainReport(False, 0, None, f"known head {known_head!r}: {problem}")
    found_known = not known_head
    expected_seq, prev, count = 1, GENESIS, 0
    events = AuditEvent.objects.using(using).order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        count += 1
        if event.seq != expected_seq:
            return ChainReport(False, count, expected_seq,
                               f"event #{expected_seq} is missing (next stored event is #{event.seq})")
        if event.prev_hash != prev:
            return ChainReport(False, count, event.seq,
                               f"event #{event.seq} does not follow event #{event.seq - 1} (prev_hash mismatch)")
        if compute_hash(_event_fields(event)) != event.hash:
            return ChainReport(False, count, event.seq, f"event #{event.seq} was altered (hash mismatch)")
        prev, expected_seq = event.hash, expected_seq + 1
        found_known = found_known or event.hash.startswith(known_head)
    if not found_known:
        return ChainReport(False, count, expected_seq,
                           f"the known head {known_head[:16]} is not in the chain: events after it were "
                           f"deleted, or the log was rewritten (the chain now ends at #{expected_seq - 1})")
    return ChainReport(True, count, None, "", prev if count else "")
