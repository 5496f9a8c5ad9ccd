"""BR-05: sequences (and MariaDB auto-increment counters) end above every restored key, MTI parents included."""
import pytest

from gestore_retention.restore import restore
from tests.caseapp.models import Company, Office, Place, Venue
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


def test_new_rows_after_a_restore_with_explicit_keys():
    company = Company.objects.create(pk=7, name="c")
    Office.objects.create(pk=10, company=company, city="a")
    Office.objects.create(pk=11, company=company, city="b")
    venue = Venue.objects.create(pk=5, label="hall", capacity=300)
    assert venue.place_ptr_id == 5
    records, _, _ = export_roots(company, venue)

    restore(records, using="other")

    restored = Company.objects.using("other").get()
    assert restored.pk == 7 and Venue.objects.using("other").get().pk == 5
    assert Company.objects.using("other").create(name="new").pk > 7
    assert Office.objects.using("other").create(company=restored, city="x").pk > 11
    assert Place.objects.using("other").create(label="p").pk > 5
    assert Venue.objects.using("other").create(label="v", capacity=1).pk > 5
    assert Place.objects.using("other").count() == 3 and Venue.objects.using("other").count() == 2


def test_remapped_keys_leave_no_collision_either():
    company = Company.objects.create(pk=7, name="c")
    Office.objects.create(pk=10, company=company, city="a")
    venue = Venue.objects.create(pk=5, label="hall", capacity=300)
    records, _, _ = export_roots(company, venue)
    # The target already uses the keys: remap gives the bundle's rows new ones.
    other = Company.objects.using("other").create(pk=7, name="there")
    Venue.objects.using("other").create(pk=5, label="there", capacity=1)

    result = restore(records, using="other", mode="remap")

    assert result.remapped["app.Company"] == 1 and result.remapped["app.Venue"] == 1
    new = Company.objects.using("other").exclude(pk=other.pk).get()
    assert new.name == "c" and new.offices.get().city == "a"
    hall = Venue.objects.using("other").get(label="hall")
    assert hall.capacity == 300 and hall.pk != 5
    assert Company.objects.using("other").create(name="new").pk > new.pk
    assert Venue.objects.using("other").create(label="v", capacity=1).pk > hall.pk
