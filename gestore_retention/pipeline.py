"""Workflow: the pipeline for one subject, chaining the stages.

    walk -> export -> seal -> store -> verify -> erase -> audit

Each function performs one stage and appends its audit event in the same
transaction as its database change. Policies, jobs and Celery live above
this module (sweep.py, tasks.py); the engine and the bundle format below it.
"""
import datetime as dt
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from . import audit, conf, holds
from .bundle import KeyRing, read_bundle, write_bundle
from .erase import blocked, erase_subjects
from .errors import EraseRefused, SubjectHeld
from .restore import NEVER
from .graph.walk import Scope, walk
from .models import AuditEvent, Bundle
from .records import Export, schema
from .verify import verify_restores

FORMAT = "gestore-retention/1"


@dataclass(frozen=True)
class Origin:
    """Why a bundle is made: the policy (name and text hash) or a command."""

    policy: str = ""
    policy_hash: str = ""
    keep_for: dt.timedelta | None = None


def subject_text(plan):
    """Return "app.Model.pk" for the plan's first subject (what audit events name)."""
    model_label, pk = plan.subjects[0]
    return model_label, str(pk)


def export_bundle(plan, *, storage=None, bundle_id=None, origin=Origin(), keyring=None, now=None,
                  action="export", then=None):
    """Export `plan`, seal and store it, record a Bundle row and an audit event.

    `then(bundle)`, if given, runs inside the transaction that records the
    bundle, so a job's transition commits with it.
    """
    now = now or timezone.now()
    storage = storage or conf.get("STORAGE")
    keyring = keyring or KeyRing.from_settings()
    bundle_id = bundle_id or uuid.uuid4().hex
    exp = Export(plan)
    metadata = bundle_metadata(plan, bundle_id=bundle_id, origin=origin, now=now)
    name = f"{bundle_id}.age"
    sealed = write_bundle(storage, name, metadata, exp.records(), keyring)
    try:
        bundle = _record_bundle(plan, sealed, exp, bundle_id, storage, origin, now, action, then)
    except BaseException:
        discard_files(storage, sealed.name, sealed.signature_name)  # never left without its row
        raise
    return bundle


def bundle_metadata(plan, *, bundle_id, origin=Origin(), now=None):
    """Return the metadata a bundle of `plan` carries (signed, and repeated in its preamble)."""
    label, pk = subject_text(plan)
    return {
        "format": FORMAT,
        "bundle_id": bundle_id,
        "subject": f"{label}.{pk}",
        "subjects": [f"{lb}.{p}" for lb, p in plan.subjects],
        "policy": origin.policy,
        "policy_hash": origin.policy_hash,
        "created_at": (now or timezone.now()).isoformat(),
        "schema": schema(set(plan.owned) | set(plan.references) | set(plan.updates)),
    }


def discard_files(storage, *names):
    """Delete stored bundle files (an orphan of a failed step, a stale bundle)."""
    from django.core.files.storage import storages

    for name in names:
        if storages[storage].exists(name):
            storages[storage].delete(name)


def _record_bundle(plan, sealed, exp, bundle_id, storage, origin, now, action, then):
    label, pk = subject_text(plan)
    with transaction.atomic(using=plan.using):
        bundle = Bundle.objects.using(plan.using).create(
            id=bundle_id, storage=storage, name=sealed.name, subject_label=label, subject_pk=pk,
            policy=origin.policy, policy_hash=origin.policy_hash, created_at=now,
            sha256=sealed.sha256, size=sealed.size, owned_digest=exp.digest, chunks=exp.chunks,
            counts={role: dict(c) for role, c in exp.counts.items()},
            expires_at=now + origin.keep_for if origin.keep_for else None,
        )
        audit.append(
            action, subject_label=label, subject_pk=pk, policy=origin.policy,
            policy_hash=origin.policy_hash, bundle_id=bundle_id, now=now, using=plan.using,
            details={"records": sealed.records, "owned": plan.total_owned, "sha256": sealed.sha256},
        )
        if then is not None:
            then(bundle)
    return bundle


def open_records(bundle, keyring=None):
    """Return a function giving a fresh record iterator of a stored bundle."""
    keyring = keyring or KeyRing.from_settings()

    def factory():
        return read_bundle(bundle.storage, bundle.name, keyring).records()

    return factory


def verify_bundle(bundle, plan, *, keyring=None, now=None, then=None):
    """Read the stored bundle back and prove it restores over `plan` (rolled back)."""
    now = now or timezone.now()
    report = verify_restores(plan, open_records(bundle, keyring), expected_digest=bundle.owned_digest)
    with transaction.atomic(using=plan.using):
        Bundle.objects.using(plan.using).filter(pk=bundle.pk).update(verified_at=now)
        audit.append(
            "verify", subject_label=bundle.subject_label, subject_pk=bundle.subject_pk,
            policy=bundle.policy, policy_hash=bundle.policy_hash, bundle_id=bundle.id,
            now=now, using=plan.using, details={"compared": report.compared, "restored": report.restored},
        )
        bundle.verified_at = now
        if then is not None:
            then(bundle)
    return report


def erase_subject(bundle, *, scope=None, precheck=None, on_erased=None, now=None, using="default",
                  batch_rows=None, on_batch=None, on_batch_erased=None):
    """Erase the bundle's subject, guarded by the verified bundle's digest.

    A subject with more owned rows than `batch_rows` (ERASE_BATCH_ROWS) is
    erased in batches, each with an "erase-batch" audit event in its own
    transaction and the last with the "erase" event (its counts cover every
    batch); `on_batch(done, total, label)` reports progress. When the audit
    log shows batches of this bundle committed already (a crash, a stopped
    worker), the erase resumes after them.
    """
    if bundle.verified_at is None:
        raise EraseRefused(f"bundle {bundle.id} is not verified; refusing to erase")
    now = now or timezone.now()
    subjects = [(bundle.subject_label, _pk(bundle))]
    earlier = list(AuditEvent.objects.using(using).filter(
        action="erase-batch", outcome="ok", bundle_id=bundle.id).values_list("details", flat=True))
    event = {"subject_label": bundle.subject_label, "subject_pk": bundle.subject_pk, "policy": bundle.policy,
             "policy_hash": bundle.policy_hash, "bundle_id": bundle.id, "now": now, "using": using}

    def record_batch(result):
        audit.append("erase-batch", **event, details={
            "batch": len(earlier), "deleted": result.total, "updated": sum(result.updated.values()),
            "files": result.files})
        earlier.append({"deleted": result.total, "updated": sum(result.updated.values()), "files": result.files})
        if on_batch_erased is not None:
            on_batch_erased(result)

    def record(result):
        # The erase event sums every batch of this bundle, earlier runs' included.
        details = {"deleted": result.total, "updated": sum(result.updated.values()), "files": result.files}
        if earlier:
            # `result` covers this call's batches; add those of earlier runs.
            details = {k: v + sum(e.get(k, 0) for e in earlier[:resumed_at]) for k, v in details.items()}
            details["batches"] = len(earlier) + 1
        audit.append("erase", **event, details=details)
        if on_erased is not None:
            on_erased(result)

    resumed_at = len(earlier)
    return erase_subjects(subjects, scope=scope or Scope(), using=using, expected_digest=bundle.owned_digest,
                          precheck=precheck, on_erased=record, chunks=bundle.chunks, batch_rows=batch_rows,
                          resume=bool(earlier), on_batch_erased=record_batch, on_batch=on_batch)


def _pk(bundle):
    from .graph.relations import get_model

    return get_model(bundle.subject_label)._meta.pk.to_python(bundle.subject_pk)


# Models whose rows a restore never writes (the app's own bookkeeping) or
# that everything else points at (content types): erasing them could not be
# undone from a bundle, so no erasure may delete them.
UNERASABLE_APPS = NEVER + ("contenttypes",)


def refuse_erasure(plan):
    """Raise the EraseRefused that forbids erasing `plan`, if any; write nothing.

    PROTECT/RESTRICT blockers (ErasureBlocked), a legal hold on a row the
    erasure would delete or change (SubjectHeld), or an owned model no
    restore could bring back. Checked before anything is exported.
    """
    if plan.blockers:
        raise blocked(plan)
    unerasable = sorted(lb for lb in plan.owned if lb.partition(".")[0] in UNERASABLE_APPS)
    if unerasable:
        raise EraseRefused(f"{plan.subjects[0][0]} {plan.subjects[0][1]}: erasing it would delete "
                           f"{', '.join(unerasable)} rows, which a restore never writes; nothing was done")
    held = holds.held_in(plan)
    if held:
        raise SubjectHeld(f"a legal hold forbids this erasure: {'; '.join(held)}; nothing was exported or deleted")


def archive_and_erase(obj, *, scope=None, using="default", origin=Origin(), keyring=None, now=None,
                      batch_rows=None, on_batch=None):
    """Run the whole pipeline for one subject outside any policy (deleteobjects).

    Return (bundle, EraseResult); `batch_rows` and `on_batch` as in erase_subject. Nothing is deleted unless the bundle was
    stored and its trial restore reproduced every row; nothing is exported
    when `refuse_erasure` refuses, and the subject's hold is checked again
    inside the erase transaction.
    """
    plan = walk([obj], scope=scope, using=using)
    refuse_erasure(plan)
    bundle = export_bundle(plan, origin=origin, keyring=keyring, now=now)
    verify_bundle(bundle, plan, keyring=keyring, now=now)
    label, pk = plan.subjects[0]

    def hold_check():
        if holds.is_held(label, pk, using=using):
            raise SubjectHeld(f"{label} {pk} was placed under a legal hold meanwhile; nothing deleted")

    return bundle, erase_subject(bundle, scope=scope, using=using, now=now, precheck=hold_check,
                                 batch_rows=batch_rows, on_batch=on_batch)
