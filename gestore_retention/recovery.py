"""Workflow: restore a bundle (disaster recovery, importobjects), all or nothing, audited."""
import os

from django.db import transaction

from . import audit
from .bundle import KeyRing, open_bundle_file, read_bundle
from .errors import BundleError
from .models import Bundle
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


def restore_bundle(source, *, using="default", dry_run=False, mode="fail", keyring=None, now=None):
    """Restore a bundle (id or path) into `using`, all or nothing, audited.

    With `dry_run` the real restore runs and is rolled back.
    """
    factory, metadata = open_source(source, keyring)
    result = None
    try:
        with transaction.atomic(using=using):
            result = restore(factory(), using=using, mode=mode)
            if dry_run:
                raise _DryRun
            subject = metadata.get("subject", "")
            label, _, pk = subject.rpartition(".")
            audit.append(
                "restore", subject_label=label, subject_pk=pk, bundle_id=str(metadata.get("bundle_id", ""))[:40],
                policy=metadata.get("policy", ""), policy_hash=metadata.get("policy_hash", ""),
                now=now, using=using, details={"rows": result.total, "mode": mode},
            )
    except _DryRun:
        remove_files(result.files_written)
    return result, metadata
