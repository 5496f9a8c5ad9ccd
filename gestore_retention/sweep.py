"""Workflow: runs of a policy, one job per subject, each a small state machine.

    pending -> exported -> verified -> erased -> closed
                   (held, failed-retryable, failed-permanent, skipped)

A worker claims a job with a lease; every transition is a conditional
UPDATE on (job, stage, lease owner), so a worker whose lease was taken over
cannot commit. Steps are idempotent and named from the job: re-running a
run finishes unfinished jobs and never repeats a finished step. At most one
open job exists per (policy, subject), on every backend (`Job.active_key`).
"""
import datetime as dt
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import audit, conf, holds
from .errors import (
    BundleError, EraseRefused, ErasureBlocked, ObjectSpecError, PolicyError, RetentionError, VerificationFailed,
)
from .graph import relations
from .graph.walk import Scope, walk
from .models import Bundle, Job, Run
from .erase import blocked
from .pipeline import Origin, discard_files, erase_subject, export_bundle, verify_bundle

log = logging.getLogger(__name__)

OPEN = (Job.PENDING, Job.EXPORTED, Job.VERIFIED, Job.ERASED, Job.RETRY)
FINAL = (Job.CLOSED, Job.HELD, Job.FAILED, Job.SKIPPED)


class LeaseLost(RetentionError):
    """Another worker owns the job now; this one must not commit."""


# Failures a retry cannot fix: they need a person (a PROTECT relation, a
# bundle that does not verify, a bad policy). Storage and database errors
# are retried on the next run, up to MAX_ATTEMPTS claims.
PERMANENT = (ErasureBlocked, VerificationFailed, BundleError, PolicyError, ObjectSpecError)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class RunSummary:
    """What a run did: jobs per final stage, rows erased, bundles made."""

    run_id: int
    policy: str
    selected: int
    stages: dict  # {stage: n}
    erased_rows: int = 0
    bundles: tuple = ()  # (bundle name, ...)
    errors: tuple = ()  # ("label.pk: message", ...)
    plan: dict = field(default_factory=dict)  # dry run: {role: {label: n}}


def scope_of(policy):
    # An excluded model is never exported nor erased: like a boundary, a
    # cascade into it blocks erasure and a reference to it is kept as a key.
    return Scope.of(boundaries=tuple(policy.scope.boundaries) + tuple(policy.scope.exclude_models))


def _key(policy, model_label, pk):
    return f"{policy.name}|{model_label}|{pk}"[:255]


def start_run(policy, *, now=None, using="default", dry_run=False):
    """Create a Run and one pending job per selected subject without an open job."""
    now = now or timezone.now()
    model_label = relations.label(relations.get_model(policy.subject))
    run = Run.objects.using(using).create(
        policy=policy.name, policy_hash=policy.text_hash, action=policy.action,
        dry_run=dry_run, started_at=now,
    )
    selected = 0
    for batch in policy.select_batches(now=now, using=using, batch_size=conf.get("BATCH_SIZE")):
        selected += len(batch)
        if dry_run:
            continue
        keys = {_key(policy, model_label, pk): pk for pk in batch}
        taken = set(Job.objects.using(using).filter(active_key__in=list(keys)).values_list("active_key", flat=True))
        new = [
            Job(run=run, policy=policy.name, subject_label=model_label, subject_pk=str(pk),
                active_key=key, updated_at=now)
            for key, pk in keys.items() if key not in taken
        ]
        try:
            with transaction.atomic(using=using):
                Job.objects.using(using).bulk_create(new)
        except IntegrityError:  # another run raced us: create one by one
            for job in new:
                try:
                    with transaction.atomic(using=using):
                        job.save(using=using)
                except IntegrityError:
                    pass
    run.counts = {"selected": selected}
    run.save(using=using, update_fields=["counts"])
    return run


def open_jobs(policy, using="default"):
    """The policy's unfinished jobs, from this run or any earlier one."""
    return Job.objects.using(using).filter(policy=policy.name, active_key__isnull=False).order_by("pk")


def claim(job_id, *, token, now, using="default"):
    """Take the lease on a job; return the Job, or None when someone else holds it."""
    lease = now + dt.timedelta(seconds=conf.get("LEASE_SECONDS"))
    n = (
        Job.objects.using(using)
        .filter(pk=job_id, stage__in=OPEN)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=token))
        .update(lease_owner=token, lease_until=lease, attempts=F("attempts") + 1)
    )
    return Job.objects.using(using).get(pk=job_id) if n else None


def advance(job, to, *, token, now, using="default", **fields):
    """Move `job` to stage `to` if we still hold its lease at its current stage."""
    if to in FINAL:
        fields.update(active_key=None, lease_owner="", lease_until=None)
    n = Job.objects.using(using).filter(pk=job.pk, stage=job.stage, lease_owner=token).update(
        stage=to, updated_at=now, **fields
    )
    if n != 1:
        raise LeaseLost(f"job {job.pk}: lease lost before moving {job.stage} -> {to}")
    job.stage = to
    for k, v in fields.items():
        setattr(job, k, v)


def renew(job, *, token, now, using="default"):
    """Extend our lease on `job` (between the batches of a long erase); raise LeaseLost if it is gone."""
    lease = max(now, timezone.now()) + dt.timedelta(seconds=conf.get("LEASE_SECONDS"))
    if not Job.objects.using(using).filter(pk=job.pk, stage=job.stage, lease_owner=token).update(lease_until=lease):
        raise LeaseLost(f"job {job.pk}: lease lost during a batched erase")


def process_job(job_id, policy, *, now=None, token=None, using="default", keyring=None):
    """Drive one job as far as it goes; return its stage. Safe to call twice."""
    token = token or uuid.uuid4().hex
    now = now or timezone.now()
    job = claim(job_id, token=token, now=now, using=using)
    if job is None:
        return Job.objects.using(using).get(pk=job_id).stage
    try:
        if job.stage == Job.RETRY:
            advance(job, job.retry_stage or Job.PENDING, token=token, now=now, using=using, retry_stage="")
        return _drive(job, policy, token=token, now=now, using=using, keyring=keyring)
    except LeaseLost:
        raise
    except (RetentionError, OSError, DatabaseError) as exc:
        # A long-running loop logs and carries on: the job records why.
        permanent = isinstance(exc, PERMANENT) or job.attempts >= MAX_ATTEMPTS
        log.warning("job %s %s.%s: %s%s", job.pk, job.subject_label, job.subject_pk, exc,
                    "" if permanent else " (will retry)")
        _fail(job, exc, token=token, now=now, using=using, permanent=permanent)
        return job.stage
    finally:
        Job.objects.using(using).filter(pk=job.pk, lease_owner=token).update(lease_owner="", lease_until=None)


def _fail(job, exc, *, token, now, using, permanent):
    # Our own errors say what is wrong in their message; others need their type.
    text = str(exc) if isinstance(exc, RetentionError) else f"{type(exc).__name__}: {exc}"
    fields = {"last_error": text[:2000]}
    if not permanent:
        fields["retry_stage"] = job.stage
    try:
        advance(job, Job.FAILED if permanent else Job.RETRY, token=token, now=now, using=using, **fields)
    except LeaseLost:
        pass


def _drive(job, policy, *, token, now, using, keyring):
    scope = scope_of(policy)
    model = relations.get_model(job.subject_label)
    pk = model._meta.pk.to_python(job.subject_pk)
    origin = Origin(policy=policy.name, policy_hash=policy.text_hash, keep_for=policy.keep_for)

    def hold_check():
        if holds.is_held(job.subject_label, job.subject_pk, using=using):
            raise _Held()

    while job.stage not in FINAL:
        if job.stage in (Job.PENDING, Job.RETRY):
            if not model._base_manager.using(using).filter(pk=pk).exists():
                advance(job, Job.SKIPPED, token=token, now=now, using=using, last_error="subject no longer exists")
                break
            if holds.is_held(job.subject_label, job.subject_pk, using=using):
                advance(job, Job.HELD, token=token, now=now, using=using)
                break
            if policy.action == "report":  # the run lists its subjects; nothing is exported
                advance(job, Job.CLOSED, token=token, now=now, using=using)
                break
            plan = walk([(model, pk)], scope=scope, using=using)
            if plan.blockers and policy.action == "archive-and-erase":
                raise blocked(plan)
            held = holds.held_in(plan) if policy.action == "archive-and-erase" else []
            if held:  # erasing this subject would delete or change a held subject's row
                advance(job, Job.HELD, token=token, now=now, using=using, last_error="; ".join(held)[:2000])
                break
            bundle_id = f"{policy.name}-{job.pk}-{job.exports}"
            storage = policy.storage
            # A crash after storing but before recording leaves an orphan
            # under this job's name: it was never verified nor used.
            if not Bundle.objects.using(using).filter(pk=bundle_id).exists():
                discard_files(storage, f"{bundle_id}.age", f"{bundle_id}.age.minisig")
            export_bundle(
                plan, storage=storage, bundle_id=bundle_id, origin=origin, keyring=keyring, now=now,
                then=lambda b: advance(job, Job.EXPORTED, token=token, now=now, using=using, bundle=b),
            )
        elif job.stage == Job.EXPORTED:
            plan = walk([(model, pk)], scope=scope, using=using)
            verify_bundle(
                job.bundle, plan, keyring=keyring, now=now,
                then=lambda b: advance(job, Job.VERIFIED, token=token, now=now, using=using),
            )
        elif job.stage == Job.VERIFIED:
            if policy.action != "archive-and-erase":
                advance(job, Job.CLOSED, token=token, now=now, using=using)
                break
            try:
                erase_subject(
                    job.bundle, scope=scope, precheck=hold_check, now=now, using=using,
                    on_erased=lambda r: advance(job, Job.ERASED, token=token, now=now, using=using),
                    # Each batch commits with a fresh lease: no second worker starts on the same subject.
                    on_batch_erased=lambda r: renew(job, token=token, now=now, using=using),
                )
            except _Held:
                advance(job, Job.HELD, token=token, now=now, using=using)
                audit.append("erase", outcome="refused", subject_label=job.subject_label,
                             subject_pk=job.subject_pk, policy=policy.name, policy_hash=policy.text_hash,
                             bundle_id=job.bundle_id, details={"reason": "legal-hold"}, now=now, using=using)
            except EraseRefused as exc:
                # New or changed rows since export: delete nothing, drop the
                # stale bundle, and export again on the next run. A batched
                # erase refused part-way keeps its bundle: it holds the rows
                # the committed batches deleted.
                stale = job.bundle
                details = {"reason": "changed-since-export"}
                if exc.partial:
                    details.update(partial=True, erased=exc.erased)
                with transaction.atomic(using=using):
                    advance(job, Job.PENDING, token=token, now=now, using=using, bundle=None,
                            exports=job.exports + 1, last_error=str(exc)[:2000])
                    audit.append("erase", outcome="refused", subject_label=job.subject_label,
                                 subject_pk=job.subject_pk, policy=policy.name,
                                 policy_hash=policy.text_hash, bundle_id=stale.id,
                                 details=details, now=now, using=using)
                    if not exc.partial:
                        Bundle.objects.using(using).filter(pk=stale.pk).delete()
                if not exc.partial:
                    discard_files(stale.storage, stale.name, f"{stale.name}.minisig")
                break
        elif job.stage == Job.ERASED:
            advance(job, Job.CLOSED, token=token, now=now, using=using)
    return job.stage


class _Held(Exception):
    pass


def finish_run(run, job_ids, using="default"):
    """Record the run's outcome: the stages of the jobs it drove (its own and resumed ones)."""
    stages = Counter(Job.objects.using(using).filter(pk__in=job_ids).values_list("stage", flat=True))
    run.counts = dict(run.counts, **{"jobs": dict(stages)})
    run.finished_at = timezone.now()
    run.save(using=using, update_fields=["counts", "finished_at"])
    return stages


def dry_run(policy, *, now=None, using="default"):
    """Return (subjects, {role: {label: n}}) of what a run would do. Writes nothing."""
    now = now or timezone.now()
    scope = scope_of(policy)
    model = relations.get_model(policy.subject)
    totals = {"owned": Counter(), "updates": Counter(), "references": Counter()}
    subjects = []
    for batch in policy.select_batches(now=now, using=using, batch_size=conf.get("BATCH_SIZE")):
        for pk in batch:
            plan = walk([(model, pk)], scope=scope, using=using)
            subjects.append((pk, plan))
            for role, counts in plan.counts().items():
                totals[role].update(counts)
    return subjects, {role: dict(c) for role, c in totals.items()}


def run_policy(policy, *, now=None, using="default", keyring=None, progress=None):
    """Run `policy` in-process: select, then drive every open job. No broker needed.

    `progress(done, total, job)` is called after each job.
    """
    now = now or timezone.now()
    run = start_run(policy, now=now, using=using)
    jobs = list(open_jobs(policy, using).values_list("pk", flat=True))
    erased_rows, bundles, errors = 0, [], []
    for i, job_id in enumerate(jobs, 1):
        stage = process_job(job_id, policy, now=now, using=using, keyring=keyring)
        job = Job.objects.using(using).select_related("bundle").get(pk=job_id)
        if job.bundle and stage in (Job.CLOSED, Job.ERASED):
            bundles.append(job.bundle.name)
            erased_rows += sum(job.bundle.counts.get("owned", {}).values()) if policy.action == "archive-and-erase" else 0
        if stage in (Job.FAILED, Job.RETRY) or (stage == Job.PENDING and job.last_error):
            errors.append(f"{job.subject_label}.{job.subject_pk}: {job.last_error}")
        if progress:
            progress(i, len(jobs), job)
    stages = finish_run(run, jobs, using)
    return RunSummary(
        run_id=run.pk, policy=policy.name, selected=run.counts.get("selected", 0), stages=dict(stages),
        erased_rows=erased_rows, bundles=tuple(bundles), errors=tuple(errors),
    )
