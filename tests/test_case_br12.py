"""BR-12: M2M links written once (custom through with its columns, auto through)."""
import datetime as dt

import pytest

from gestore_retention.erase import erase
from gestore_retention.restore import restore
from tests.caseapp.models import Band, Membership, Musician
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

Fans = Band.fans.through


def make_band():
    band = Band.objects.create(name="Echo")
    m1, m2, m3 = (Musician.objects.create(name=n) for n in ("m1", "m2", "m3"))
    Membership.objects.create(band=band, musician=m1, instrument="drums", since=dt.date(2019, 5, 1))
    Membership.objects.create(band=band, musician=m2, instrument="bass", since=dt.date(2020, 1, 15))
    band.fans.add(m2, m3)
    return band


@pytest.mark.parametrize("mode", ["fail", "remap"])
def test_restore_into_an_empty_database(mode):
    records, _, _ = export_roots(make_band())

    restore(records, using="other", mode=mode)

    assert Band.objects.using("other").count() == 1
    assert Musician.objects.using("other").count() == 3
    members = Membership.objects.using("other").order_by("musician__name")
    assert [(x.musician.name, x.instrument, x.since) for x in members] == [
        ("m1", "drums", dt.date(2019, 5, 1)), ("m2", "bass", dt.date(2020, 1, 15))]
    assert sorted(Fans.objects.using("other").values_list("musician__name", flat=True)) == ["m2", "m3"]
    band = Band.objects.using("other").get()
    assert all(x.band_id == band.pk for x in members)
    assert Fans.objects.using("other").filter(band=band).count() == 2


def test_delete_then_restore():
    band = make_band()
    records, digest, plan = export_roots(band)
    erase(plan, expected_digest=digest)
    assert not Band.objects.exists() and not Membership.objects.exists() and not Fans.objects.exists()
    assert Musician.objects.count() == 3
    restore(records)
    assert Membership.objects.count() == 2 and Fans.objects.count() == 2
