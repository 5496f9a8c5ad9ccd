"""BR-01: circular and self-referential FKs, an MTI child, restored where FKs are checked per statement."""
import datetime as dt

import pytest
from django.db import connections, transaction

from gestore_retention.restore import restore
from tests.caseapp.models import PinnedPost, Post, Thread
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


def make_thread():
    t = Thread.objects.create(title="Welcome")
    p1 = Post.objects.create(thread=t, body="first")
    p2 = Post.objects.create(thread=t, body="second", reply_to=p1)
    p3 = PinnedPost.objects.create(thread=t, body="third", reply_to=p2, pinned_until=dt.date(2027, 1, 1))
    p1.newest_reply = p3
    p1.save()
    p2.newest_reply = p3
    p2.save()
    return t


def check(using):
    assert Thread.objects.using(using).count() == 1
    assert Post.objects.using(using).count() == 3
    assert PinnedPost.objects.using(using).count() == 1
    posts = {p.body: p for p in Post.objects.using(using).all()}
    pinned = PinnedPost.objects.using(using).get()
    assert pinned.post_ptr_id == posts["third"].pk and pinned.body == "third"
    assert pinned.pinned_until == dt.date(2027, 1, 1)
    assert posts["second"].reply_to_id == posts["first"].pk
    assert posts["third"].reply_to_id == posts["second"].pk
    assert posts["first"].reply_to_id is None
    assert posts["first"].newest_reply_id == posts["third"].pk
    assert posts["second"].newest_reply_id == posts["third"].pk
    assert posts["third"].newest_reply_id is None


@pytest.mark.parametrize("mode", ["fail", "remap"])
def test_restore_into_an_empty_database(mode):
    records, _, _ = export_roots(make_thread())
    restore(records, using="other", mode=mode)
    check("other")


def test_restore_with_every_constraint_checked_per_statement():
    """PostgreSQL with NOT DEFERRABLE constraints behaves as SET CONSTRAINTS ALL IMMEDIATE;
    MySQL/MariaDB always check per statement; SQLite's Django constraints are deferred."""
    records, _, _ = export_roots(make_thread())
    connection = connections["other"]
    with transaction.atomic(using="other"):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        restore(records, using="other")
    check("other")


def test_records_in_the_worst_order_still_restore():
    """Children first, pointers before their targets: the restore orders what it can and defers the rest."""
    records, _, _ = export_roots(make_thread())
    posts = [r for r in records if r["model"] == "app.post"]
    others = [r for r in records if r["model"] != "app.post"]
    restore(others[:1] + list(reversed(posts)) + others[1:], using="other")
    check("other")
