"""BR-09: a proxy-model root: its concrete row (and what hangs off it) is exported, restored, erased."""
import json

import pytest

from gestore_retention.erase import erase
from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.caseapp.models import Agent, Badge, Person

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


def export(root):
    plan = walk([root])
    exp = Export(plan)
    records = json.loads(json.dumps(list(exp.records())))  # through JSON, as in a bundle
    return plan, records, exp.digest


def make():
    a = Agent.objects.create(name="Ray")
    Badge.objects.create(holder=a, code="B7")
    bystander = Person.objects.create(name="Other")
    Badge.objects.create(holder=bystander, code="X1")
    return a


def test_export_holds_the_concrete_row_and_restores_into_an_empty_database():
    a = make()
    plan, records, _ = export(a)
    assert plan.subjects == (("app.Person", a.pk),)
    owned = sorted((r["model"], r["pk"]) for r in records if r["role"] == "owned")
    assert owned == [("app.badge", Badge.objects.get(code="B7").pk), ("app.person", a.pk)]
    assert not [r for r in records if r["model"] == "app.agent"]

    restore(records, using="other")

    person = Person.objects.using("other").get()
    assert person.name == "Ray" and person.pk == a.pk
    assert Agent.objects.using("other").get(name="Ray").pk == person.pk
    badge = Badge.objects.using("other").get()
    assert (badge.code, badge.holder_id) == ("B7", person.pk)


def test_delete_removes_the_person_and_badge_and_nothing_else():
    a = make()
    plan, _, digest = export(a)
    result = erase(plan, expected_digest=digest)
    assert result.deleted == {"app.Person": 1, "app.Badge": 1}
    assert list(Person.objects.values_list("name", flat=True)) == ["Other"]
    assert list(Badge.objects.values_list("code", flat=True)) == ["X1"]
