"""BR-19: PROTECT reached through a cascade path (django/django PR #12394, Trac #31219).

Delete must refuse cleanly, report exactly the blockers, and delete nothing.
"""
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import ProtectedError

from gestore_retention.errors import ErasureBlocked
from gestore_retention.graph.walk import walk
from gestore_retention.pipeline import archive_and_erase
from tests.caseapp.models import Invoice, Region, Store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def north():
    north = Region.objects.create(name="north")
    s1 = Store.objects.create(region=north, name="s1")
    Store.objects.create(region=north, name="s2")
    Invoice.objects.create(store=s1, number="INV-1")
    return north


def everything():
    return (
        sorted(Region.objects.values_list("name", flat=True)),
        sorted(Store.objects.values_list("name", flat=True)),
        sorted(Invoice.objects.values_list("number", flat=True)),
    )


def test_delete_refuses_with_a_protected_error_naming_the_blockers(north, retention_env):
    before = everything()
    with pytest.raises(ProtectedError) as info:
        archive_and_erase(north)
    assert isinstance(info.value, ErasureBlocked)
    assert {obj.number for obj in info.value.protected_objects} == {"INV-1"}
    assert "Invoice.store" in str(info.value)
    assert everything() == before == (["north"], ["s1", "s2"], ["INV-1"])


def test_the_plan_names_the_blocker_before_anything_is_exported(north):
    plan = walk([north])
    assert [(b.kind, b.model, b.field) for b in plan.blockers] == [("protect", "app.Invoice", "store")]


def test_deleteobjects_gives_one_clear_error(north, retention_env):
    before = everything()
    with pytest.raises(CommandError, match=r"app\.Invoice\.store \(PROTECT\)"):
        call_command("deleteobjects", f"app.Region.{north.pk}")
    assert everything() == before
