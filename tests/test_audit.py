"""Tests of gestore_retention.audit: the hash chain, its verification, no personal data."""
import datetime as dt
import random
import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction

from gestore_retention import audit
from gestore_retention.models import AuditEvent

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def _append_some(n=5):
    return [
        audit.append("export", subject_label="demoapp.Organisation", subject_pk=str(i),
                     policy="churned-tenants", policy_hash="a" * 64, bundle_id=f"b{i}",
                     details={"rows": i, "models": {"demoapp.Project": 2}, "key": "k-2026:01"},
                     now=NOW + dt.timedelta(seconds=i))
        for i in range(1, n + 1)
    ]


@pytest.mark.django_db
def test_append_builds_a_chain_that_verifies():
    events = _append_some(3)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == audit.GENESIS
    assert events[1].prev_hash == events[0].hash
    report = audit.verify_chain()
    assert report.ok and report.events == 3 and report.first_bad_seq is None
    assert report.last_hash == events[-1].hash
    assert "ok: 3 events" in str(report)


@pytest.mark.django_db
def test_empty_chain_verifies():
    report = audit.verify_chain()
    assert report.ok and report.events == 0


@pytest.mark.django_db
def test_stored_event_round_trips_to_the_same_hash():
    event = audit.append("erase", details={"ratio": 0.1, "big": 2**53 + 1, "flag": True, "none": None})
    stored = AuditEvent.objects.get(pk=event.pk)
    assert audit.compute_hash(audit._event_fields(stored)) == stored.hash


@pytest.mark.django_db
@pytest.mark.parametrize("change", [
    {"subject_pk": "999"},
    {"details": {"rows": 0}},
    {"outcome": "failed"},
    {"created_at": NOW + dt.timedelta(days=1)},
])
def test_tampering_is_detected_naming_the_seq(change):
    _append_some(5)
    AuditEvent.objects.filter(seq=3).update(**change)
    report = audit.verify_chain()
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "#3" in str(report) and "altered" in report.message


@pytest.mark.django_db
def test_rehashed_tampering_breaks_the_next_link():
    _append_some(5)
    event = AuditEvent.objects.get(seq=2)
    event.subject_pk = "999"
    fields = audit._event_fields(event)
    AuditEvent.objects.filter(seq=2).update(subject_pk="999", hash=audit.compute_hash(fields))
    report = audit.verify_chain()
    assert not report.ok and report.first_bad_seq == 3
    assert "prev_hash" in report.message


@pytest.mark.django_db
def test_deleting_a_middle_event_is_detected():
    _append_some(5)
    AuditEvent.objects.filter(seq=3).delete()
    report = audit.verify_chain()
    assert not report.ok and report.first_bad_seq == 3
    assert "missing" in report.message


@pytest.mark.django_db
def test_deleting_the_newest_events_is_detected_with_a_known_head():
    from django.core.management import CommandError, call_command

    _append_some(5)
    head = audit.verify_chain().last_hash
    assert audit.verify_chain(known_head=head[:16]).ok
    AuditEvent.objects.filter(seq__gte=4).delete()
    assert audit.verify_chain().ok  # a shorter chain is still a valid chain...
    report = audit.verify_chain(known_head=head[:16])
    assert not report.ok and "is not in the chain" in report.message  # ...but the known head is gone
    with pytest.raises(CommandError, match="is not in the chain"):
        call_command("retention", "audit-verify", "--known-head", head[:16])
    assert "16 hex digits" in audit.verify_chain(known_head="abc").message


@pytest.mark.django_db
def test_deleting_the_first_event_is_detected():
    _append_some(3)
    AuditEvent.objects.filter(seq=1).delete()
    assert audit.verify_chain().first_bad_seq == 1


@pytest.mark.django_db
def test_reordering_events_is_detected():
    _append_some(4)
    # Swap the seq of events 2 and 3 (through a free number: seq is unique).
    AuditEvent.objects.filter(seq=2).update(seq=100)
    AuditEvent.objects.filter(seq=3).update(seq=2)
    AuditEvent.objects.filter(seq=100).update(seq=3)
    report = audit.verify_chain()
    assert not report.ok and report.first_bad_seq == 2


@pytest.mark.django_db
@pytest.mark.parametrize("details", [
    {"email": "alice@example.com"},
    {"name": "Alice Smith"},
    {"note": "x" * 65},
    {"nested": {"who": ["ok", "Bob Jones"]}},
    {"Alice Smith": 1},
    {"when": NOW},
    {"nan": float("nan")},
    {"a": {"b": {"c": {"d": {"e": 1}}}}},
])
def test_personal_data_in_details_is_refused(details):
    with pytest.raises(ValueError, match="audit details"):
        audit.append("export", details=details)
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_bad_action_is_refused():
    with pytest.raises(ValueError, match="action"):
        audit.append("erase everything now")


@pytest.mark.django_db
def test_event_rolls_back_with_the_callers_transaction():
    audit.append("export")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit.append("erase")
            raise RuntimeError("step failed")
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["export"]
    with transaction.atomic():
        audit.append("erase")
    assert audit.verify_chain().events == 2


@pytest.mark.django_db
def test_lost_race_retries_on_the_new_head(monkeypatch):
    """A writer that read a stale head hits the unique seq and retries after it."""
    first = audit.append("export")
    real_head = audit._head
    calls = []

    def stale_once(using):
        if not calls:
            calls.append(1)
            return None  # as if read before `first` was appended
        return real_head(using)

    monkeypatch.setattr(audit, "_head", stale_once)
    second = audit.append("erase")
    assert calls == [1]
    assert second.seq == 2 and second.prev_hash == first.hash
    assert audit.verify_chain().ok


def _step(t, i):
    with transaction.atomic():  # the caller's step: the event commits with it
        audit.append("export", subject_label="demoapp.Organisation", subject_pk=f"{t}-{i}")


def _retry_when_sqlite_is_locked(step, attempts=200):
    # SQLite's shared-cache test database fails a second writer at once
    # ("database table is locked") instead of waiting: serialise by retrying
    # the whole step, as a sweep worker retries a job. Other backends wait.
    for _ in range(attempts):
        try:
            return step()
        except OperationalError as exc:
            if connection.vendor != "sqlite" or "locked" not in str(exc):
                raise
            time.sleep(random.uniform(0.001, 0.01))
    raise AssertionError("still locked")


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_make_one_chain():
    threads_n, per_thread = 2, 15
    errors = []
    barrier = threading.Barrier(threads_n)

    def work(t):
        try:
            barrier.wait()
            for i in range(per_thread):
                _retry_when_sqlite_is_locked(lambda: _step(t, i))
        except Exception as exc:  # noqa: BLE001  reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, threads_n * per_thread + 1))
    report = audit.verify_chain()
    assert report.ok, str(report)
    assert connection.vendor in ("sqlite", "postgresql", "mysql")
