"""Workflow: restore a bundle (disaster recovery, importobjects), all or nothing, audited."""
import os

from django.db import transaction
from django.utils.dateparse import parse_datetime

from . import audit
from .bundle import KeyRing, open_bundle_file, read_bundle
from .errors import BundleError, RestoreError
from .models import AuditEvent, Bundle
from .restore import remove_files, restore


class _DryRun(Exception):
    pass


def open_source(source, keyring=None):
    """Return (record factory, metadata) for a bundle id or a local bundle path."""
    keyring = keyring or KeyRing.from_settings()
    bundle = Bundle.objects.filter(pk=source).first() if len(source) <= 40 else None
    if bundle is not None:
        def factory():
            return read_bundle(bundle.storage, bundle.name, keyring).records()
    elif os.path.exists(source):
        def factory():
            return open_bundle_file(source, keyring=keyring).records()
    else:
        raise BundleError(f"{source}: no such bundle file, and no bundle with that id")
    # Reading the metadata checks the signature and the preamble; the records
    # are read (and checked to the end) by each call of the factory.
    opener = (lambda: read_bundle(bundle.storage, bundle.name, keyring)) if bundle else \
        (lambda: open_bundle_file(source, keyring=keyring))
    with opener() as opened:
        metadata = opened.metadata
    return factory, metadata


class ErasedSubject(RestoreError):
    """The audit log shows the bundle's subject was erased after the bundle was made."""


def erased_since(metadata, *, using="default"):
    """Return the erase events of the bundle's subjects newer than the bundle.

    The erase that archived this very bundle does not count: restoring an
    archive is what it is for. An erase recorded later with another bundle
    (or none) means the subject was removed again, e.g. on request, and a
    restore of this older copy would bring it back.
    """
    made = parse_datetime(str(metadata.get("created_at") or ""))
    if made is None:
        return []
    events = []
    for subject in metadata.get("subjects") or [metadata.get("subject", "")]:
        label, _, pk = str(subject).rpartition(".")
        if not label:
            continue
        qs = AuditEvent.objects.using(using).filter(
            action="erase", subject_label=label, subject_pk=pk, created_at__gt=made
        ).exclude(bundle_id=str(metadata.get("bundle_id", ""))[:40])
        events.extend(qs.order_by("seq"))
    return events


def _refuse_erased(metadata, using):
    events = erased_since(metadata, using=using)
    if events:
        e = events[-1]
        raise ErasedSubject(
            f"{e.subject_label}.{e.subject_pk} was erased after this bundle was made (audit event "
            f"#{e.seq}, {e.created_at:%Y-%m-%d %H:%M:%S}); restoring it would bring the subject back. "
            "Nothing was restored; use --allow-erased (allow_erased=True) if that is intended."
        )


def restore_bundle(source, *, using="default", dry_run=False, mode="fail", keyring=None, now=None,
                   allow_erased=False, allow_additive=False, models_allowed=None, progress=None):
    """Restore a bundle (id or path) into `using`, all or nothing, audited.

    Everything is checked before anything is written: the signature (when
    the bundle is opened), the schema fingerprints against the current
    models, conflicts with existing rows (per `mode`) and the audit log (a
    subject erased after the bundle was made is refused unless
    `allow_erased`), all before the first row is written, in one transaction.
    With `dry_run` the real restore runs and is rolled back. Return
    (RestoreResult, metadata).
    """
    factory, metadata = open_source(source, keyring)
    result = None
    try:
        with transaction.atomic(using=using):
            result = restore(factory, using=using, mode=mode, schema=metadata.get("schema"),
                             schema_fields=metadata.get("fields"), allow_additive=allow_additive,
                             models_allowed=models_allowed, progress=progress,
                             before_write=None if allow_erased else lambda: _refuse_erased(metadata, using))
            if dry_run:
                raise _DryRun
            subject = metadata.get("subject", "")
            label, _, pk = subject.rpartition(".")
            audit.append(
                "restore", subject_label=label, subject_pk=pk, bundle_id=str(metadata.get("bundle_id", ""))[:40],
                policy=metadata.get("policy", ""), policy_hash=metadata.get("policy_hash", ""),
                now=now, using=using, details={"rows": result.total, "mode": mode,
                                               "allow_erased": bool(allow_erased)},
            )
    except _DryRun:
        remove_files(result.files_written)
    except BaseException:
        if result is not None:
            remove_files(result.files_written)
        raise
    return result, metadata
