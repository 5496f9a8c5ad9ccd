"""The ancestor's failure, reproduced on the demo: export one user of a busy site.

gestore walked every relation both ways, one object at a time: exporting one
user of its library demo pulled in thousands of other users' rows, and the
file then failed to import into an empty database (FOREIGN KEY constraint
failed). Here one member of a generated demo site is exported: the export
holds that user's own rows and no owned row of any other user, and it
restores into an empty database with every exported row equal.
"""
import datetime as dt
import json

import pytest
from django.contrib.auth.models import User

from demoapp import models as m
from demoapp.generator import generate
from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.snapshot import snapshot

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def test_one_user_exports_alone_and_restores_into_an_empty_database(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    generate(tenants=8, scale=1, seed=7, now=NOW)
    # A member of an organisation that has other members, with comments and reactions of their own.
    user = max(User.objects.all(), key=lambda u: (m.Membership.objects.filter(org__memberships__user=u).count(),
                                                  u.pk))
    assert m.Membership.objects.exclude(user=user).filter(org__memberships__user=user).exists()

    plan = walk([user])
    owned = plan.owned
    assert set(owned) <= {"auth.User", "demoapp.Membership", "demoapp.Profile"}, sorted(owned)
    assert set(owned["auth.User"]) == {user.pk}
    assert set(owned["demoapp.Membership"]) == set(user.memberships.values_list("pk", flat=True))
    # Rows of other users are at most references (shared data, never erased), never owned.
    others_memberships = set(m.Membership.objects.exclude(user=user).values_list("pk", flat=True))
    assert not set(owned["demoapp.Membership"]) & others_memberships
    assert "demoapp.Membership" not in plan.references
    # What erasing the user changes elsewhere is recorded as updates, with old values.
    assert set(plan.updates.get("demoapp.Comment", {}).get("author", ())) == set(
        m.Comment.objects.filter(author=user).values_list("pk", flat=True))
    total = sum(len(v) for v in owned.values()) + sum(len(v) for v in plan.references.values())
    assert total < m.Membership.objects.count() + m.Organisation.objects.count() + User.objects.count()

    exp = Export(plan)
    records = json.loads(json.dumps(list(exp.records())))
    assert {r["model"] for r in records if r["role"] == "owned"} <= {"auth.user", "demoapp.membership",
                                                                       "demoapp.profile"}

    # Restore into an empty database: no constraint fails, every exported row comes back equal
    # (other users come back as references, without their password or staff rights: the deny-list).
    assert not User.objects.using("other").exists()
    restore(records, using="other")
    here, there = snapshot(), snapshot(using="other")
    denied = {"password", "is_staff", "is_superuser"}
    for r in records:
        if r["role"] in ("owned", "reference"):
            label = next(lb for lb in here if lb.lower() == r["model"])
            skip = denied if (label, r["role"]) == ("auth.User", "reference") else set()
            got = {k: v for k, v in there[label][r["pk"]].items() if k not in skip}
            assert got == {k: v for k, v in here[label][r["pk"]].items() if k not in skip}, (label, r["pk"])
    assert there["auth.User"][user.pk] == here["auth.User"][user.pk]  # the subject itself: every field


def test_a_reference_user_is_exported_without_credentials():
    from tests.factories import tenant

    org = tenant("acme")
    User.objects.filter(pk=org.owner_id).update(password="pbkdf2_sha256$600000$salt$hash", is_staff=True)
    member = org.memberships.exclude(user=org.owner).get().user
    records = list(Export(walk([member])).records())
    owner = next(r for r in records if r["model"] == "auth.user" and r["pk"] == org.owner_id)
    assert owner["role"] == "reference"
    assert owner["fields"]["password"].startswith("!") and "pbkdf2" not in json.dumps(records)
    assert owner["fields"]["is_staff"] is False and owner["fields"]["username"] == "acme-owner"
    subject = next(r for r in records if r["model"] == "auth.user" and r["pk"] == member.pk)
    assert subject["role"] == "owned" and subject["fields"]["password"] == member.password  # the subject's own data
