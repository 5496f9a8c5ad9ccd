"""BR-06: a post_save receiver that ignores `raw` creates competing rows during a restore."""
import pytest
from django.db.models.signals import post_save

from gestore_retention.erase import erase
from gestore_retention.restore import restore
from tests.caseapp.models import Account, Preferences
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


def make_account():
    a = Account.objects.create(login="sam")
    a.prefs.data = {"theme": "dark"}
    a.prefs.save()
    return a


def test_restore_into_an_empty_database():
    records, _, _ = export_roots(make_account())

    restore(records, using="other")

    account = Account.objects.using("other").get()
    assert account.login == "sam"
    assert Preferences.objects.using("other").count() == 1
    assert Preferences.objects.using("other").get(account=account).data == {"theme": "dark"}
    # The receiver is still connected: a new account gets its preferences.
    new = Account.objects.create(login="new")
    assert Preferences.objects.get(account=new).data == {}


def test_restore_where_the_receiver_writes_into_the_same_database():
    """Erase, then restore into the same database: the receiver's row is replaced by the bundle's."""
    a = make_account()
    records, digest, plan = export_roots(a)
    erase(plan, expected_digest=digest)
    assert not Preferences.objects.exists()
    seen = []

    def spy(sender, instance, raw, **kwargs):
        seen.append(raw)

    post_save.connect(spy, sender=Account)
    try:
        result = restore(records)
    finally:
        post_save.disconnect(spy, sender=Account)

    assert seen == [True]  # receivers see raw=True
    assert result.receiver_rows_removed == {"app.Preferences": 1}
    account = Account.objects.get()
    assert Preferences.objects.count() == 1
    assert Preferences.objects.get().account_id == account.pk == a.pk
    assert Preferences.objects.get().data == {"theme": "dark"}
    new = Account.objects.create(login="new")
    assert Preferences.objects.get(account=new).data == {}
