"""The sweep: one job per subject, resumable, leased, audited (invariants 1, 5, 6)."""
import datetime as dt

import pytest
from django.core.files.storage import storages
from django.utils import timezone

from demoapp import models as m
from gestore_retention import audit, holds, sweep
from gestore_retention.graph import relations
from gestore_retention.graph.walk import Scope, walk
from gestore_retention.records import ModelCodec
from gestore_retention.models import AuditEvent, Bundle, Job
from gestore_retention.policy import Policy
from tests.factories import tenant
from tests.snapshot import diff, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def policy(**overrides):
    data = {
        "name": "churned-tenants",
        "subject": "demoapp.Organisation",
        "schedule": "0 3 * * *",
        "select": {"status": "churned", "churned_at__lt": "-90d"},
        "action": "archive-and-erase",
        "scope": {"boundaries": ["demoapp.Organisation"]},
        "bundle": {"storage": "retention", "keep_for": "30d"},
    }
    data.update(overrides)
    return Policy.from_dict(data)


def stored_files():
    storage = storages["retention"]
    return sorted(storage.listdir("")[1]) if storage.exists("") else []


def test_run_erases_selected_keeps_the_rest_and_runs_once(retention_env):
    old = tenant("old", churned_days=200)
    recent = tenant("recent", churned_days=10)
    active = tenant("active", status="active")
    held = tenant("held", churned_days=300)
    holds.place_hold("demoapp.Organisation", held.pk, reason="case-1")
    before = snapshot()
    plan = walk([old], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    summary = sweep.run_policy(policy())
    assert summary.selected == 1 and summary.stages == {"closed": 1}
    assert not m.Organisation.objects.filter(pk=old.pk).exists()
    for org in (recent, active, held):
        assert m.Organisation.objects.filter(pk=org.pk).exists()
    # Exactly the owned rows are gone, the SET_NULL columns are NULL, and
    # everything else is untouched, row for row.
    expected = {label: dict(rows) for label, rows in before.items()}
    for label, pks in plan.owned.items():
        encode = ModelCodec.of(relations.get_model(label)).pk_encoder
        for pk in pks:
            del expected[label][encode(pk)]
    for pk in plan.updates["demoapp.Profile"]["current_org"]:
        expected["demoapp.Profile"][pk] = dict(expected["demoapp.Profile"][pk], current_org=None)
    assert diff(expected, snapshot()) == []
    bundle = Bundle.objects.get()
    assert bundle.verified_at is not None
    assert len(stored_files()) == 2  # the .age file and its .minisig
    # Invariant 5: a second run does nothing.
    again = sweep.run_policy(policy())
    assert again.selected == 0 and Bundle.objects.count() == 1
    assert AuditEvent.objects.filter(action="erase").count() == 1
    # Invariant 6: one event per step, chain verifies.
    assert list(AuditEvent.objects.exclude(action__startswith="hold").values_list("action", flat=True)) == [
        "export", "verify", "erase",
    ]
    assert audit.verify_chain().ok


def test_nothing_is_deleted_that_is_not_in_a_verified_bundle(retention_env, monkeypatch):
    old = tenant("old")
    before = snapshot()
    import gestore_retention.pipeline as pipeline
    from gestore_retention.errors import VerificationFailed

    def broken(plan, factory, **kw):
        raise VerificationFailed("trial restore differs")

    monkeypatch.setattr(pipeline, "verify_restores", broken)
    summary = sweep.run_policy(policy())
    assert summary.stages == {"failed-permanent": 1}
    assert diff(before, snapshot()) == []
    assert Bundle.objects.get().verified_at is None
    assert m.Organisation.objects.filter(pk=old.pk).exists()


def test_crash_after_each_stage_resumes_without_repeating(retention_env, monkeypatch):
    tenant("old")
    import gestore_retention.sweep as sweep_mod

    real_verify, real_erase = sweep_mod.verify_bundle, sweep_mod.erase_subject

    class Crash(BaseException):
        pass

    def crash(*a, **kw):
        raise Crash

    # crash at verification: the job stays "exported" with its bundle
    monkeypatch.setattr(sweep_mod, "verify_bundle", crash)
    with pytest.raises(Crash):
        sweep.run_policy(policy())
    job = Job.objects.get()
    assert job.stage == Job.EXPORTED
    Job.objects.update(lease_until=timezone.now() - dt.timedelta(seconds=1))  # the worker died
    monkeypatch.setattr(sweep_mod, "verify_bundle", real_verify)
    # crash at erase: the job stays "verified"
    monkeypatch.setattr(sweep_mod, "erase_subject", crash)
    with pytest.raises(Crash):
        sweep.run_policy(policy())
    assert Job.objects.get().stage == Job.VERIFIED
    Job.objects.update(lease_until=timezone.now() - dt.timedelta(seconds=1))
    monkeypatch.setattr(sweep_mod, "erase_subject", real_erase)
    summary = sweep.run_policy(policy())
    assert summary.stages == {"closed": 1}
    assert Job.objects.count() == 1 and Bundle.objects.count() == 1
    assert [a for a in AuditEvent.objects.values_list("action", flat=True)] == ["export", "verify", "erase"]
    assert audit.verify_chain().ok


def test_a_held_lease_keeps_other_workers_out(retention_env):
    tenant("old")
    p = policy()
    run = sweep.start_run(p)
    job = sweep.open_jobs(p).get()
    now = timezone.now()
    assert sweep.claim(job.pk, token="worker-a", now=now) is not None
    assert sweep.claim(job.pk, token="worker-b", now=now) is None
    assert sweep.process_job(job.pk, p, token="worker-b") == Job.PENDING
    # A worker whose lease was taken over cannot commit a transition.
    later = now + dt.timedelta(hours=1)
    assert sweep.claim(job.pk, token="worker-b", now=later) is not None
    with pytest.raises(sweep.LeaseLost):
        sweep.advance(job, Job.EXPORTED, token="worker-a", now=later)
    assert run.pk


def test_new_rows_after_export_send_the_subject_back_to_export(retention_env, monkeypatch):
    old = tenant("old")
    import gestore_retention.sweep as sweep_mod

    real_erase = sweep_mod.erase_subject

    def insert_then_erase(bundle, **kw):
        doc = m.Document.objects.filter(project__org=old).first()
        m.Comment.objects.create(document=doc, body="arrived late", created_at=doc.created_at)
        return real_erase(bundle, **kw)

    monkeypatch.setattr(sweep_mod, "erase_subject", insert_then_erase)
    summary = sweep.run_policy(policy())
    assert summary.stages == {"pending": 1}
    assert m.Organisation.objects.filter(pk=old.pk).exists()
    assert Bundle.objects.count() == 0 and stored_files() == []  # stale bundle dropped
    monkeypatch.setattr(sweep_mod, "erase_subject", real_erase)
    summary = sweep.run_policy(policy())
    assert summary.stages == {"pending": 0, "closed": 1} or summary.stages == {"closed": 1}
    assert not m.Organisation.objects.filter(pk=old.pk).exists()
    bundle = Bundle.objects.get()
    assert bundle.counts["owned"]["demoapp.comment"] >= 4


def test_a_hold_placed_after_verification_stops_the_erase(retention_env, monkeypatch):
    old = tenant("old")
    import gestore_retention.sweep as sweep_mod

    real_erase = sweep_mod.erase_subject

    def hold_then_erase(bundle, **kw):
        holds.place_hold("demoapp.Organisation", old.pk, reason="late-hold")
        return real_erase(bundle, **kw)

    monkeypatch.setattr(sweep_mod, "erase_subject", hold_then_erase)
    summary = sweep.run_policy(policy())
    assert summary.stages == {"held": 1}
    assert m.Organisation.objects.filter(pk=old.pk).exists()
    assert AuditEvent.objects.filter(action="erase", outcome="refused").count() == 1


def test_dry_run_writes_nothing(retention_env):
    tenant("old")
    before = snapshot()
    subjects, totals = sweep.dry_run(policy())
    assert len(subjects) == 1 and totals["owned"]["demoapp.Organisation"] == 1
    assert diff(before, snapshot()) == [] and stored_files() == []
    assert not AuditEvent.objects.exists() and not Job.objects.exists()


def test_audit_events_hold_no_personal_data(retention_env):
    org = tenant("old")
    sweep.run_policy(policy())
    text = " ".join(str(e.__dict__) for e in AuditEvent.objects.all())
    for personal in (org.name, org.slug + "@example.org", "old-owner"):
        assert personal not in text


def test_a_protect_relation_is_a_permanent_failure_naming_the_model(retention_env):
    old = tenant("old")
    # Invoice.currency is PROTECT: erasing a currency is blocked. Make the
    # policy's subject the currency to hit it.
    currency_policy = policy(subject="demoapp.Currency", select={"code": "EUR"}, scope={})
    before = snapshot()
    summary = sweep.run_policy(currency_policy)
    assert summary.stages == {"failed-permanent": 1}
    job = Job.objects.get()
    assert "demoapp.Invoice.currency" in job.last_error and "PROTECT" in job.last_error
    assert diff(before, snapshot()) == [] and stored_files() == [] and not Bundle.objects.exists()
    assert m.Organisation.objects.filter(pk=old.pk).exists()


def test_storage_failure_is_retried_by_the_next_run(retention_env, monkeypatch):
    old = tenant("old")
    import gestore_retention.bundle.store as store

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # The bundle storage fails: whatever path the format layer takes to disk.
    monkeypatch.setattr(store, "_temp_in", disk_full)
    monkeypatch.setattr(storages["retention"].__class__, "_save", disk_full)
    before = snapshot()
    summary = sweep.run_policy(policy())
    assert summary.stages == {"failed-retryable": 1}, summary
    assert "No space left" in Job.objects.get().last_error
    assert diff(before, snapshot()) == [] and not Bundle.objects.exists()
    monkeypatch.undo()
    summary = sweep.run_policy(policy())
    assert summary.stages == {"closed": 1}
    assert not m.Organisation.objects.filter(pk=old.pk).exists()
    assert Bundle.objects.count() == 1 and len(stored_files()) == 2
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["export", "verify", "erase"]


def test_storage_returning_other_bytes_fails_verification_and_erases_nothing(retention_env, monkeypatch):
    old = tenant("old")
    import gestore_retention.sweep as sweep_mod

    real_verify = sweep_mod.verify_bundle

    def corrupt_then_verify(bundle, plan, **kw):
        path = storages[bundle.storage].path(bundle.name)
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0x01
        with open(path, "wb") as fh:
            fh.write(data)
        return real_verify(bundle, plan, **kw)

    monkeypatch.setattr(sweep_mod, "verify_bundle", corrupt_then_verify)
    before = snapshot()
    summary = sweep.run_policy(policy())
    assert summary.stages == {"failed-permanent": 1}
    assert "signature does not verify" in Job.objects.get().last_error
    assert diff(before, snapshot()) == []
    assert m.Organisation.objects.filter(pk=old.pk).exists()
    assert not AuditEvent.objects.filter(action__in=["verify", "erase"]).exists()


def test_the_same_job_delivered_twice_at_once_does_the_work_once(retention_env):
    import threading

    from django.db import connection

    tenant("old")
    p = policy()
    sweep.start_run(p)
    job_id = sweep.open_jobs(p).get().pk
    results = []

    def deliver():
        try:
            results.append(sweep.process_job(job_id, p))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One delivery did the work; the other found the lease taken (or the job done).
    final = Job.objects.get(pk=job_id)
    if final.stage != Job.CLOSED:  # the second delivery saw the lease; a redelivery finishes it
        sweep.process_job(job_id, p)
    assert Job.objects.get(pk=job_id).stage == Job.CLOSED
    assert Bundle.objects.count() == 1
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["export", "verify", "erase"]


def test_a_report_policy_lists_its_subjects_and_writes_nothing_else(retention_env):
    old = tenant("old", churned_days=200)
    before, events = snapshot(), AuditEvent.objects.count()
    summary = sweep.run_policy(policy(action="report"))
    assert summary.selected == 1 and summary.stages == {"closed": 1} and summary.bundles == ()
    assert Job.objects.get().subject_pk == str(old.pk)
    assert diff(before, snapshot()) == [] and AuditEvent.objects.count() == events
    assert not Bundle.objects.exists() and stored_files() == []


def test_a_subject_whose_erasure_would_change_a_held_row_is_held(retention_env):
    # A user policy must not erase the owner of an organisation under hold (SET_NULL would change it).
    held = tenant("held", churned_days=300)
    holds.place_hold("demoapp.Organisation", held.pk, reason="case-9")
    user_policy = policy(name="old-users", subject="auth.User", select={"username": "held-owner"},
                         scope={"boundaries": ["demoapp.Organisation"]})
    before = snapshot()
    summary = sweep.run_policy(user_policy)
    assert summary.stages == {"held": 1}
    assert f"demoapp.Organisation {held.pk} (hold: case-9)" in Job.objects.get().last_error
    assert diff(before, snapshot()) == [] and not Bundle.objects.exists()
