"""Batched erase of a subject bigger than ERASE_BATCH_ROWS, with real transactions.

Each batch commits on its own, so these tests use transaction=True (no
rolled-back TestCase) and change rows between batches from another
connection, through the progress callback: a new child row and a changed
row make the next batch refuse, every row deleted before was in the
verified bundle, and a crash between batches is finished by running the
erase again, each row erased once and no audit event repeated.
"""
import datetime as dt
import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from demoapp import models as m
from gestore_retention.audit import verify_chain
from gestore_retention.errors import EraseRefused
from gestore_retention.graph.walk import walk
from gestore_retention.models import AuditEvent, Bundle
from gestore_retention.pipeline import archive_and_erase, erase_subject, open_records
from gestore_retention.recovery import restore_bundle

from .factories import tenant
from .snapshot import diff, snapshot

pytestmark = pytest.mark.django_db(transaction=True)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CHUNK = 4  # keys per stored chunk (BATCH_SIZE at export)
BATCH = 10  # rows per erase transaction


@pytest.fixture
def env(retention_env, settings):
    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, BATCH_SIZE=CHUNK)
    return retention_env


def big_tenant(slug):
    """A tenant with threads of comments: replies point at comments of earlier chunks (self-FK CASCADE)."""
    org = tenant(slug)
    for doc in m.Document.objects.filter(project__org=org):
        parent = None
        for i in range(9):
            parent = m.Comment.objects.create(document=doc, parent=parent if i % 3 else None, body=f"c{i}",
                                              created_at=T0)
    return org


def in_other_connection(fn):
    """Run `fn` on a second database connection (a thread of its own) and wait for it."""
    errors = []

    def target():
        try:
            with transaction.atomic():
                fn()
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            errors.append(exc)
        finally:
            connection.close()

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    if errors:
        raise errors[0]


def owned_keys(bundle):
    """{(label_lower, pk)} of the bundle's owned records."""
    return {(r["model"], r["pk"]) for r in open_records(bundle)() if r["role"] == "owned"}


def gone_rows(before, after):
    """{(label_lower, pk)} of rows in `before` and not in `after`."""
    out = set()
    for label, rows in before.items():
        for pk in set(rows) - set(after.get(label, {})):
            out.add((label.lower(), pk))
    return out


def events(bundle, action):
    return list(AuditEvent.objects.filter(bundle_id=bundle.id, action=action).order_by("seq"))


def test_batched_erase_gives_the_single_transaction_end_state(env):
    org = big_tenant("big")
    tenant("other")
    owned = walk([org]).total_owned
    assert owned > 3 * BATCH
    before = snapshot()
    progress = []
    bundle, result = archive_and_erase(org, batch_rows=BATCH, on_batch=lambda *a: progress.append(a))
    batched = snapshot()
    assert result.total == owned
    assert bundle.chunks["size"] == CHUNK and all(len(e) == 4 for es in bundle.chunks["owned"].values() for e in es)
    # Progress after every committed batch, up to every owned row.
    assert len(progress) >= owned // (2 * BATCH) and progress[-1][:2] == (owned, owned)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    # One audit event per batch: "erase-batch" for each but the last (the first applies the
    # updates), "erase" for the last, summing them all.
    assert len(events(bundle, "erase-batch")) == len(progress)
    assert [e.details["batch"] for e in events(bundle, "erase-batch")] == list(range(len(progress)))
    (erase_event,) = events(bundle, "erase")
    assert erase_event.details["deleted"] == owned and erase_event.details["batches"] == len(progress) + 1
    assert verify_chain().ok
    assert gone_rows(before, batched) == owned_keys(bundle)

    # Restore, then erase in one transaction: the same end state, row for row.
    restore_bundle(bundle.id)
    assert not diff(before, snapshot())
    bundle2, result2 = archive_and_erase(org, batch_rows=10**6)
    assert result2.total == owned and not events(bundle2, "erase-batch")
    assert not diff(batched, snapshot())


def refused_between_batches(change):
    """Erase a big tenant, running `change()` on another connection after the second batch commits."""
    org = big_tenant("big")
    before = snapshot()
    calls = []

    def on_batch(done, total, label):
        calls.append(done)
        if len(calls) == 2:
            in_other_connection(change)

    with pytest.raises(EraseRefused) as info:
        archive_and_erase(org, batch_rows=BATCH, on_batch=on_batch)
    bundle = Bundle.objects.get(subject_pk=str(org.pk))
    after = snapshot()
    assert info.value.partial and info.value.erased == calls[-1] > 0
    assert "partly erased" in str(info.value) and "exported again" in str(info.value)
    # Everything that went was in the verified bundle; the subject and the rest are still there.
    gone = gone_rows(before, after)
    assert gone and gone <= owned_keys(bundle)
    assert len(gone) == calls[-1]
    assert m.Organisation.objects.filter(pk=org.pk).exists()
    assert not events(bundle, "erase")
    assert len(events(bundle, "erase-batch")) == 1 + len(calls)  # the updates' transaction, then each batch
    return org, info.value, after


def test_a_child_row_inserted_between_batches_is_refused_and_kept(env):
    new = {}

    def insert():
        doc = m.Document.objects.filter(project__org__slug="big").order_by("-pk").first()
        new["pk"] = m.Comment.objects.create(document=doc, body="late", created_at=T0).pk

    org, exc, after = refused_between_batches(insert)
    assert m.Comment.objects.filter(pk=new["pk"]).exists()
    assert "not in the bundle" in str(exc)
    # What is left can be exported and erased again, the new row with it.
    rest = walk([org])
    assert rest.owns("demoapp.Comment", new["pk"])
    bundle, result = archive_and_erase(org, batch_rows=BATCH)
    assert result.total == rest.total_owned and not m.Comment.objects.filter(pk=new["pk"]).exists()


def test_a_row_changed_between_batches_is_refused(env):
    def change():  # the project goes in one of the last batches
        m.Project.objects.filter(org__slug="big").update(name="changed")

    org, exc, after = refused_between_batches(change)
    assert "rows changed" in str(exc)
    assert m.Project.objects.get(org=org).name == "changed"


def test_a_crash_between_batches_resumes_without_repeating(env):
    org = big_tenant("big")
    other = tenant("other")
    owned = walk([org]).total_owned
    before = snapshot()
    calls = []

    def crash(done, total, label):
        calls.append(done)
        if len(calls) == 3:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        archive_and_erase(org, batch_rows=BATCH, on_batch=crash)
    bundle = Bundle.objects.get(subject_pk=str(org.pk))
    assert len(events(bundle, "erase-batch")) == 1 + 3 and not events(bundle, "erase")

    resumed = []
    result = erase_subject(bundle, batch_rows=BATCH, on_batch=lambda *a: resumed.append(a))
    assert result.total == owned - calls[-1]
    assert resumed[-1][:2] == (owned - calls[-1],) * 2
    batches = events(bundle, "erase-batch")
    assert [e.details["batch"] for e in batches] == list(range(len(batches)))  # none repeated
    (erase_event,) = events(bundle, "erase")
    # Each row was deleted by exactly one batch: the batches of both runs and the last one sum to the subject.
    assert erase_event.details["deleted"] == owned
    assert sum(e.details["deleted"] for e in batches[:4]) == calls[-1]
    assert calls[-1] + result.total == owned
    assert gone_rows(before, snapshot()) == owned_keys(bundle)
    assert m.Organisation.objects.filter(pk=other.pk).exists()
    assert verify_chain().ok
    # The bundle restores the whole subject: each row was erased once, by one of the batches.
    restore_bundle(bundle.id)
    assert not diff(before, snapshot())


def test_a_resume_refuses_a_chunk_that_lost_rows_to_someone_else(env):
    org = big_tenant("big")

    def crash(done, total, label):
        raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        archive_and_erase(org, batch_rows=BATCH, on_batch=crash)
    bundle = Bundle.objects.get(subject_pk=str(org.pk))
    # Someone deletes one row of a chunk the crashed run had not reached (the first batch
    # took the small models; comments come later).
    leaf = m.Comment.objects.filter(document__project__org=org, replies__isnull=True).order_by("pk").first()
    leaf.delete()
    with pytest.raises(EraseRefused, match="rows were deleted or added outside this erase") as info:
        erase_subject(bundle, batch_rows=BATCH)
    assert info.value.partial
    assert m.Organisation.objects.filter(pk=org.pk).exists()


def test_deleteobjects_batch_rows_shows_progress(env):
    org = big_tenant("big")
    owned = walk([org]).total_owned
    out, err = io.StringIO(), io.StringIO()
    call_command("deleteobjects", f"demoapp.Organisation.{org.pk}", "--batch-rows", str(BATCH), stdout=out, stderr=err)
    assert f"deleted {owned} rows" in out.getvalue()
    lines = err.getvalue().splitlines()
    assert lines and lines[-1].startswith(f"{owned}/{owned} ")  # not a terminal: lines, the last at 100%
    batches = len(events(Bundle.objects.get(), "erase-batch"))  # one per deleting batch
    assert batches >= 3
    # A line for each 10% step crossed by the running row count, labelled with its batch and models.
    assert len(lines) >= min(batches, 10) // 2 and lines[-1].startswith(f"{owned}/{owned} batch {batches}: ")
    assert all(" batch " in line for line in lines)

    org = big_tenant("big2")
    out, err = io.StringIO(), io.StringIO()
    call_command("deleteobjects", f"demoapp.Organisation.{org.pk}", "--batch-rows", str(BATCH), "-v", "0",
                 stdout=out, stderr=err)
    assert err.getvalue() == ""


def test_deleteobjects_batch_rows_must_be_positive(env):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a positive integer"):
        call_command("deleteobjects", "demoapp.Organisation.1", "--batch-rows", "0",
                     stdout=io.StringIO(), stderr=io.StringIO())


# -- the sweep: a batched erase across runs ------------------------------------
def churn_policy():
    from gestore_retention.policy import Policy

    return Policy.from_dict({
        "name": "churned-tenants", "subject": "demoapp.Organisation", "schedule": "0 3 * * *",
        "select": {"status": "churned", "churned_at__lt": "-90d"}, "action": "archive-and-erase",
        "scope": {"boundaries": ["demoapp.Organisation"]}, "bundle": {"storage": "retention", "keep_for": "30d"},
    })


def fail_batch(monkeypatch, n, exc):
    """Make the n-th "erase-batch" audit append raise `exc` (its batch rolls back)."""
    from gestore_retention import audit

    real, seen = audit.append, []

    def append(action, **kw):
        if action == "erase-batch":
            seen.append(1)
            if len(seen) == n:
                raise exc
        return real(action, **kw)

    monkeypatch.setattr(audit, "append", append)


def test_a_run_stopped_between_batches_is_finished_by_the_next_run(env, settings, monkeypatch):
    from django.db import OperationalError

    from gestore_retention import sweep
    from gestore_retention.models import Job

    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, ERASE_BATCH_ROWS=BATCH)
    org = big_tenant("big")
    owned = walk([org], scope=sweep.scope_of(churn_policy())).total_owned
    before = snapshot()
    fail_batch(monkeypatch, 3, OperationalError("server closed the connection"))
    first = sweep.run_policy(churn_policy())
    assert first.stages == {Job.RETRY: 1}  # retryable: the job resumes at "verified"
    assert m.Organisation.objects.filter(pk=org.pk).exists()
    monkeypatch.undo()
    second = sweep.run_policy(churn_policy())
    assert second.stages == {Job.CLOSED: 1}
    (bundle,) = Bundle.objects.all()  # the same bundle: no second export
    assert gone_rows(before, snapshot()) == owned_keys(bundle)
    assert [e.details["batch"] for e in events(bundle, "erase-batch")] == list(range(len(events(bundle, "erase-batch"))))
    (erase_event,) = events(bundle, "erase")
    assert erase_event.details["deleted"] == owned
    assert verify_chain().ok


def test_a_run_refused_part_way_keeps_its_bundle_and_exports_the_rest(env, settings, monkeypatch):
    from gestore_retention import sweep
    from gestore_retention.models import Job

    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, ERASE_BATCH_ROWS=BATCH)
    org = big_tenant("big")
    fail_batch(monkeypatch, 3, EraseRefused("rows changed since the bundle was made (test)"))
    first = sweep.run_policy(churn_policy())
    assert first.stages == {Job.PENDING: 1}
    (kept,) = Bundle.objects.all()
    assert kept.verified_at is not None  # it holds the rows the first batches erased
    refused = AuditEvent.objects.get(action="erase", outcome="refused")
    assert refused.details["partial"] is True and refused.details["erased"] > 0
    monkeypatch.undo()
    second = sweep.run_policy(churn_policy())
    assert second.stages == {Job.CLOSED: 1}
    assert not m.Organisation.objects.filter(pk=org.pk).exists()
    assert Bundle.objects.count() == 2
