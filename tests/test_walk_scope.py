"""Scope: extra owned relations, soft relations, excluded models and fields, exactly."""
import pytest
from django.contrib.contenttypes.models import ContentType

from gestore_retention.erase import erase
from gestore_retention.errors import ObjectSpecError
from gestore_retention.graph.walk import Scope, SoftRelation, walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.caseapp import models as c
from tests.snapshot import diff, snapshot
from tests.test_walk_relations import assert_collector_agrees, box, collector_view

pytestmark = pytest.mark.django_db

SOFT_TENANT = SoftRelation("app.Usage", "tenant_id", target="app.Box")
SOFT_AUDIT = SoftRelation("app.History", "object_pk", content_type="content_type")


def with_copies(b):
    """Hidden copies of a box's data: usage rows by tenant id, history rows by content type + text pk."""
    c.Usage.objects.create(tenant_id=b.pk, units=3)
    c.Usage.objects.create(tenant_id=b.pk, units=4)
    c.History.objects.create(content_type=ContentType.objects.get_for_model(c.Box), object_pk=str(b.pk),
                             changes={"code": [None, b.code]})
    for lid in c.Lid.objects.filter(box=b):
        c.History.objects.create(content_type=ContentType.objects.get_for_model(c.Lid), object_pk=str(lid.pk))
    # Same pk, another model: not the box's.
    c.History.objects.create(content_type=ContentType.objects.get_for_model(c.Sku), object_pk=str(b.pk))


def test_without_a_scope_soft_relations_are_not_followed():
    b = box("b1")
    with_copies(b)
    plan = walk([b])
    assert "app.Usage" not in plan.owned and "app.History" not in plan.owned
    assert_collector_agrees(plan)


def test_soft_relations_own_exactly_the_subjects_copies():
    b1, b2 = box("b1"), box("b2")
    with_copies(b1)
    with_copies(b2)
    plan = walk([b1], scope=Scope.of(soft_relations=[SOFT_TENANT, SOFT_AUDIT]))
    assert plan.owned["app.Usage"] == set(c.Usage.objects.filter(tenant_id=b1.pk).values_list("pk", flat=True))
    lid = c.Lid.objects.get(box=b1)
    want = set(c.History.objects.filter(content_type__model="box", object_pk=str(b1.pk)).values_list("pk", flat=True))
    want |= set(c.History.objects.filter(content_type__model="lid", object_pk=str(lid.pk)).values_list("pk", flat=True))
    assert plan.owned["app.History"] == want
    assert plan.extra == {"app.Usage": plan.owned["app.Usage"], "app.History": plan.owned["app.History"]}
    # Owned = exactly what the Collector deletes, given the subject plus the scope's extra rows.
    assert_collector_agrees(plan)
    assert [s.via for s in plan.explain("app.Usage", min(plan.owned["app.Usage"])).steps] == ["", str(SOFT_TENANT)]


def test_soft_relations_parse_from_text_and_check_names():
    scope = Scope.of(soft_relations=["app.Usage.tenant_id->app.Box", "app.History.content_type+object_pk"])
    assert set(scope.soft_relations) == {SOFT_TENANT, SOFT_AUDIT}
    for bad, match in [
        ("app.Nope.tenant_id->app.Box", "unknown model"),
        ("app.Usage.nope->app.Box", "has no field"),
        ("app.Usage.tenant_id", "name its target"),
        ("app.Bottle.crate->app.Crate", "foreign key"),
        ("app.History.changes+object_pk", "not a content type"),
    ]:
        with pytest.raises(ObjectSpecError, match=match):
            Scope.of(soft_relations=[bad])


def test_extra_owned_relation_turns_updates_into_owned_rows_and_the_collector_agrees():
    from django.contrib.auth.models import User

    b = box()
    user = User.objects.create(username="holder")
    lockers = {c.Locker.objects.create(owner=user, box=b).pk for _ in range(2)}
    assert walk([b]).updates["app.Locker"]["box"] == lockers
    plan = walk([b], scope=Scope.of(owned_relations=["app.Box.lockers"]))
    assert plan.owned["app.Locker"] == lockers and "app.Locker" not in plan.updates
    assert plan.extra == {"app.Locker": lockers}
    assert_collector_agrees(plan)
    assert plan.references["auth.User"] == {user.pk}


def test_extra_owned_forward_relation_cascades_like_the_collector():
    from django.contrib.auth.models import User

    user = User.objects.create(username="owner")
    b = box()
    locker = c.Locker.objects.create(owner=user, box=b)
    other_locker = c.Locker.objects.create(owner=user)
    plan = walk([locker], scope=Scope.of(owned_relations=["app.Locker.owner"]))
    # Owning the user owns what deleting the user deletes: its other locker too.
    assert plan.owned["auth.User"] == {user.pk}
    assert plan.owned["app.Locker"] == {locker.pk, other_locker.pk}
    assert_collector_agrees(plan)


def test_owned_relation_names_are_checked():
    for bad, match in [("app.Box.nope", "has no field"), ("app.Box.code", "not a relation"),
                       ("app.Label.target", "GenericForeignKey"), ("nope.Box.lockers", "unknown model")]:
        with pytest.raises(ObjectSpecError, match=match):
            Scope.of(owned_relations=[bad])


def test_excluded_models_are_boundaries_and_excluded_fields_are_exported_as_defaults():
    b = box()
    plan = walk([b], scope=Scope.of(exclude_models=["app.Sku"], exclude_fields=["app.Lid.color"]))
    assert "app.Sku" not in plan.references and plan.boundary["app.Sku"] == {"SKU-1"}
    recs = list(Export(plan).records())
    assert not [r for r in recs if r["model"] == "app.sku"]
    (lid,) = [r for r in recs if r["model"] == "app.lid"]
    assert lid["fields"]["color"] == ""  # the field's default, never the stored "red"
    with pytest.raises(ObjectSpecError, match="only plain columns"):
        Scope.of(exclude_fields=["app.Lid.box"])


def test_boundary_on_a_soft_relation_is_kept_as_keys_and_blocks_erasure():
    b = box()
    with_copies(b)
    plan = walk([b], scope=Scope.of(soft_relations=[SOFT_TENANT], boundaries=["app.Usage"]))
    assert "app.Usage" not in plan.owned
    assert plan.boundary["app.Usage"] == set(c.Usage.objects.values_list("pk", flat=True))
    assert [x.kind for x in plan.blockers] == ["boundary"]


@pytest.mark.django_db(transaction=True)
def test_erase_with_soft_relations_deletes_the_copies_and_restore_brings_everything_back():
    b1, b2 = box("b1"), box("b2")
    with_copies(b1)
    with_copies(b2)
    before = snapshot(app_labels=("app",))
    scope = Scope.of(soft_relations=[SOFT_TENANT, SOFT_AUDIT], owned_relations=["app.Box.lockers"])
    plan = walk([b1], scope=scope)
    exp = Export(plan)
    records = list(exp.records())
    deleted, _ = collector_view(plan)
    result = erase(plan, expected_digest=exp.digest)
    assert result.deleted["app.Usage"] == 2 and result.deleted["app.History"] == 2
    assert sum(result.deleted.values()) == sum(len(v) for v in deleted.values())
    assert c.Usage.objects.filter(tenant_id=b2.pk).count() == 2
    restore(records)
    assert diff(before, snapshot(app_labels=("app",))) == []
