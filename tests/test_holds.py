"""Tests of gestore_retention.holds: placing, releasing, checking, and the audit trail."""
import datetime as dt
import uuid

import pytest

from gestore_retention import audit, holds
from gestore_retention.errors import ObjectSpecError
from gestore_retention.models import AuditEvent, LegalHold

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def org(db):
    from demoapp.models import Organisation

    return Organisation.objects.create(name="Acme", slug="acme", created_at=NOW)


@pytest.mark.django_db
def test_place_and_release_each_append_one_event(org):
    hold = holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-17", now=NOW)
    assert holds.is_held("demoapp.Organisation", org.pk)
    assert holds.is_held("demoapp.organisation", str(org.pk))  # label and pk are normalised
    assert hold.subject_pk == str(org.pk) and hold.placed_at == NOW
    holds.release_hold("demoapp.Organisation", org.pk, now=NOW + dt.timedelta(days=1))
    assert not holds.is_held("demoapp.Organisation", org.pk)
    events = list(AuditEvent.objects.order_by("seq").values_list("action", "subject_label", "subject_pk", "details"))
    assert events == [
        ("hold-placed", "demoapp.Organisation", str(org.pk), {"hold": hold.pk}),
        ("hold-released", "demoapp.Organisation", str(org.pk), {"hold": hold.pk}),
    ]
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_placing_the_same_hold_twice_changes_nothing(org):
    first = holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-17")
    again = holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-17")
    assert again.pk == first.pk
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db
def test_two_cases_need_the_hold_id_to_release(org):
    a = holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-1")
    b = holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-2")
    with pytest.raises(ObjectSpecError, match="2 active holds"):
        holds.release_hold("demoapp.Organisation", org.pk)
    holds.release_hold("demoapp.Organisation", org.pk, hold_id=a.pk)
    assert holds.is_held("demoapp.Organisation", org.pk)  # CASE-2 still holds it
    holds.release_hold("demoapp.Organisation", org.pk)
    assert not holds.is_held("demoapp.Organisation", org.pk)
    assert LegalHold.objects.get(pk=b.pk).released_at is not None
    assert AuditEvent.objects.count() == 4


@pytest.mark.django_db
def test_hold_on_the_concrete_model_covers_its_proxy(org):
    holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-3")
    assert holds.is_held("demoapp.ChurnedOrganisation", org.pk)


@pytest.mark.django_db
@pytest.mark.parametrize("label, pk, message", [
    ("demoapp.Nope", 1, 'unknown model "demoapp.Nope"'),
    ("nolabel", 1, "unknown model"),
    ("demoapp.Organisation", "abc", "not a valid primary key"),
    ("demoapp.Organisation", 999999, "no such object"),
    ("demoapp.Invoice", "not-a-uuid", "not a valid primary key"),
    ("demoapp.Invoice", str(uuid.uuid4()), "no such object"),
])
def test_bad_subjects_are_refused_and_write_nothing(label, pk, message):
    with pytest.raises(ObjectSpecError, match=message):
        holds.place_hold(label, pk, reason="CASE-9")
    assert not LegalHold.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_empty_reason_is_refused(org):
    with pytest.raises(ObjectSpecError, match="reason"):
        holds.place_hold("demoapp.Organisation", org.pk, reason="  ")


@pytest.mark.django_db
def test_releasing_without_a_hold_is_an_error(org):
    with pytest.raises(ObjectSpecError, match="no active legal hold"):
        holds.release_hold("demoapp.Organisation", org.pk)
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_failed_audit_rolls_the_hold_back(org, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(audit, "append", boom)
    with pytest.raises(RuntimeError):
        holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-4")
    assert not LegalHold.objects.exists()


@pytest.mark.django_db
def test_exclude_held_in_sql_for_integer_and_uuid_keys(org):
    from demoapp.models import Currency, Invoice, Organisation

    other = Organisation.objects.create(name="Beta", slug="beta", created_at=NOW)
    holds.place_hold("demoapp.Organisation", org.pk, reason="CASE-5")
    assert list(holds.exclude_held(Organisation.objects.order_by("pk")).values_list("pk", flat=True)) == [other.pk]

    eur = Currency.objects.create(code="EUR", name="Euro")
    inv = [Invoice.objects.create(org=org, number=str(i), currency=eur, total=1, issued_at=NOW) for i in range(3)]
    holds.place_hold("demoapp.Invoice", str(inv[1].pk).upper(), reason="CASE-6")  # any spelling
    left = set(holds.exclude_held(Invoice.objects.all()).values_list("pk", flat=True))
    assert left == {inv[0].pk, inv[2].pk}

    holds.place_hold("demoapp.Currency", "EUR", reason="CASE-7")
    assert not holds.exclude_held(Currency.objects.all()).exists()


def test_deleteobjects_refuses_a_held_subject_and_a_subject_whose_erasure_changes_it(db, retention_env):
    """A hold forbids erasing its subject, and erasing a user that would SET_NULL the held row."""
    from django.core.management import CommandError, call_command

    from demoapp import models as m
    from gestore_retention.models import AuditEvent, Bundle
    from tests.factories import tenant
    from tests.snapshot import diff, snapshot

    org = tenant("held")
    holds.place_hold("demoapp.Organisation", org.pk, reason="case-1")
    owner = org.owner
    before, events = snapshot(), AuditEvent.objects.count()
    for spec in (f"demoapp.Organisation.{org.pk}", f"auth.User.{owner.pk}"):
        with pytest.raises(CommandError, match=f"a legal hold forbids this erasure: demoapp.Organisation {org.pk}"):
            call_command("deleteobjects", spec)
    assert diff(before, snapshot()) == [] and AuditEvent.objects.count() == events
    assert not Bundle.objects.exists() and m.Organisation.objects.filter(pk=org.pk).exists()
