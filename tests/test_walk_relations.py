"""Every relation kind Django has, walked and exported, checked against Django's Collector.

For each kind, the owned set must be exactly what `Collector.collect()` would
delete and the updates exactly the rows it would change; the export must hold
those rows under their concrete model, keyed as Django's fixtures key them.
"""
import datetime as dt
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.db.models.deletion import Collector
from django.test.utils import CaptureQueriesContext

from demoapp import models as m
from gestore_retention.graph import relations
from gestore_retention.graph.walk import Scope, walk
from gestore_retention.records import Export
from tests.caseapp import models as c
from tests.factories import tenant

pytestmark = pytest.mark.django_db


def collector_view(plan):
    """Return ({label: {pk}} deleted, {label: {field: {pk}}} changed) as Django's Collector sees the plan."""
    collector = Collector(using=plan.using, origin=None)
    roots = {}
    for model_label, pk in plan.subjects:
        roots.setdefault(model_label, set()).add(pk)
    for model_label, pks in plan.extra.items():
        roots.setdefault(model_label, set()).update(pks)
    for model_label, pks in sorted(roots.items()):  # collect() takes one model at a time
        collector.collect(list(relations.get_model(model_label)._base_manager.using(plan.using).filter(pk__in=pks)))
    deleted = {}
    for model, instances in collector.data.items():
        deleted.setdefault(relations.label(model), set()).update(o.pk for o in instances)
    for qs in collector.fast_deletes:
        deleted.setdefault(relations.label(qs.model), set()).update(qs.values_list("pk", flat=True))
    changed = {}
    for (f, _value), batches in collector.field_updates.items():
        for objs_ in batches:
            pks = set(objs_.values_list("pk", flat=True)) if hasattr(objs_, "values_list") else {o.pk for o in objs_}
            changed.setdefault(relations.label(f.model), {}).setdefault(f.name, set()).update(pks)
    return {k: v for k, v in deleted.items() if v}, changed


def assert_collector_agrees(plan):
    deleted, changed = collector_view(plan)
    assert {k: set(v) for k, v in plan.owned.items()} == deleted
    want = {}
    for model_label, per_field in changed.items():
        for fname, pks in per_field.items():
            left = pks - set(plan.owned.get(model_label, ()))
            if left:
                want.setdefault(model_label, {})[fname] = left
    assert {k: {f: set(p) for f, p in v.items()} for k, v in plan.updates.items()} == want


def records_of(plan):
    return list(Export(plan).records())


def box(code="b1"):
    b = c.Box.objects.create(code=code)
    c.Label.objects.create(target=b, text=f"{code}-label")
    c.AuditTrail.objects.create(target=b, action="create")
    lid = c.Lid.objects.create(box=b, color="red")
    c.Label.objects.create(target=lid, text=f"{code}-lid-label")
    c.Hinge.objects.create(box=b, size=2)
    c.Slip.objects.create(box=b)
    c.Slip.objects.create(box=b, hidden=True)
    sku, _ = c.Sku.objects.get_or_create(code="SKU-1")
    crate = c.Crate.objects.create(box=b)
    c.Bottle.objects.create(crate=crate, sku=sku)
    c.Slot.objects.create(box=b, n=1, sku=sku)
    c.Slot.objects.create(box=b, n=2)
    return b


def test_generic_relations_with_custom_names_char_and_text_object_ids():
    b1, b2 = box("b1"), box("b2")
    plan = walk([b1])
    assert_collector_agrees(plan)
    labels = set(c.Label.objects.filter(text__startswith="b1-").values_list("pk", flat=True))
    assert plan.owned["app.Label"] == labels  # the box's own and its lid's (abstract base GenericRelation)
    assert plan.owned["app.AuditTrail"] == {c.AuditTrail.objects.get(object_pk=str(b1.pk)).pk}
    assert not plan.owns("app.Box", b2.pk)
    # The generic rows point back at the box: the box is not a reference of its own rows.
    assert "app.Box" not in plan.references


def test_generic_foreign_key_with_char_object_id_is_followed_forward():
    b = box()
    label = c.Label.objects.get(text="b1-label")
    plan = walk([label])
    assert plan.references["app.Box"] == {b.pk}
    assert plan.references["contenttypes.ContentType"] >= {ContentType.objects.get_for_model(c.Box).pk}
    assert str(plan.explain("app.Box", b.pk)) == f"app.Box {b.pk!r} (reference): app.Label {label.pk!r} --app.Label.target--> app.Box {b.pk!r}"


def test_abstract_base_fk_and_generic_relation():
    b = box()
    plan = walk([b])
    assert plan.owned["app.Lid"] == set(c.Lid.objects.values_list("pk", flat=True))
    assert plan.owned["app.Hinge"] == set(c.Hinge.objects.values_list("pk", flat=True))
    assert "app.Box.lids" not in plan.via.get("app.Lid", ()) and "app.Lid.box" in plan.via["app.Lid"]


def test_to_field_uuid_and_char_keys():
    b = box()
    plan = walk([b])
    assert_collector_agrees(plan)
    crate = c.Crate.objects.get()
    assert plan.owned["app.Crate"] == {crate.pk} and isinstance(crate.pk, uuid.UUID)
    assert plan.owned["app.Bottle"] == set(c.Bottle.objects.values_list("pk", flat=True))
    assert plan.references["app.Sku"] == {"SKU-1"}
    recs = {(r["model"], r["role"]): r for r in records_of(plan)}
    assert recs["app.crate", "owned"]["pk"] == str(crate.pk)
    assert recs["app.crate", "owned"]["fields"]["box"] == "b1"  # the to_field value, as Django's serializers write it
    assert recs["app.sku", "reference"]["pk"] == "SKU-1"
    # A char-pk root with a PROTECT relation is blocked, with the bottle as blocker.
    blocked = walk([c.Sku.objects.get()])
    assert [(x.kind, x.model, x.field) for x in blocked.blockers] == [("protect", "app.Bottle", "sku")]


def test_composite_primary_keys_are_tuples_in_the_plan_and_lists_in_records():
    b = box()
    plan = walk([b])
    assert_collector_agrees(plan)
    assert plan.owned["app.Slot"] == {(b.pk, 1), (b.pk, 2)}
    slots = sorted(r["pk"] for r in records_of(plan) if r["model"] == "app.slot")
    assert slots == [[b.pk, 1], [b.pk, 2]]
    # A composite-pk row as the root, and as a SET_NULL update.
    assert walk([c.Slot.objects.get(n=1)]).owned == {"app.Slot": frozenset({(b.pk, 1)})}
    assert walk([("app.Slot", [b.pk, 2])]).subjects == (("app.Slot", (b.pk, 2)),)
    c.Bottle.objects.all().delete()
    sku_plan = walk([c.Sku.objects.get()])
    assert_collector_agrees(sku_plan)
    assert sku_plan.updates["app.Slot"]["sku"] == {(b.pk, 1)}
    updates = [r for r in records_of(sku_plan) if r["role"] == "update"]
    assert updates == [{"model": "app.slot", "pk": [b.pk, 1], "fields": {"sku": "SKU-1"}, "role": "update"}]


def test_swappable_user_model():
    User = get_user_model()
    user = User.objects.create(username="u1")
    other = User.objects.create(username="u2")
    b = box()
    c.Locker.objects.create(owner=user, box=b)
    c.Locker.objects.create(owner=other, box=b)
    plan = walk([user])
    assert_collector_agrees(plan)
    assert plan.subjects == ((User._meta.label, user.pk),)
    assert plan.owned["app.Locker"] == set(user.lockers.values_list("pk", flat=True))
    assert plan.references["app.Box"] == {b.pk}
    box_plan = walk([b])
    assert box_plan.updates["app.Locker"]["box"] == set(c.Locker.objects.values_list("pk", flat=True))
    assert User._meta.label not in box_plan.references  # rows that are only updated bring in no references


def test_rows_hidden_by_the_default_manager_are_walked_with_the_base_manager():
    b = box()
    hidden = c.Slip._base_manager.get(hidden=True)
    assert not c.Slip.objects.filter(pk=hidden.pk).exists()
    plan = walk([b])
    assert_collector_agrees(plan)
    assert hidden.pk in plan.owned["app.Slip"] and len(plan.owned["app.Slip"]) == 2
    assert {r["pk"] for r in records_of(plan) if r["model"] == "app.slip"} == set(plan.owned["app.Slip"])
    assert walk([(c.Slip, hidden.pk)]).owned == {"app.Slip": frozenset({hidden.pk})}


def test_multi_table_inheritance_in_both_directions():
    venue = c.Venue.objects.create(label="hall", capacity=300)
    place = c.Place.objects.create(label="plain")
    child_plan = walk([venue])
    assert_collector_agrees(child_plan)
    assert child_plan.owned == {"app.Venue": frozenset({venue.pk}), "app.Place": frozenset({venue.pk})}
    parent_plan = walk([c.Place.objects.get(pk=venue.pk)])
    assert_collector_agrees(parent_plan)
    assert parent_plan.owned == child_plan.owned
    assert walk([place]).owned == {"app.Place": frozenset({place.pk})}
    recs = records_of(child_plan)
    assert [(r["model"], set(r["fields"])) for r in recs] == [("app.place", {"label"}), ("app.venue", {"capacity"})]


def test_self_references_and_cycles():
    thread = c.Thread.objects.create(title="t")
    p1 = c.Post.objects.create(thread=thread, body="1")
    p2 = c.Post.objects.create(thread=thread, body="2", reply_to=p1)
    p3 = c.PinnedPost.objects.create(thread=thread, body="3", reply_to=p2, pinned_until=dt.date(2030, 1, 1))
    p1.newest_reply = p3
    p1.save()
    other = c.Thread.objects.create(title="o")
    c.Post.objects.create(thread=other, body="x", newest_reply=p2)
    plan = walk([thread])
    assert_collector_agrees(plan)
    assert plan.owned["app.Post"] == {p1.pk, p2.pk, p3.pk}
    assert plan.owned["app.PinnedPost"] == {p3.pk}
    # The other thread's post points at an owned post through SET_NULL: an update.
    assert set(plan.updates["app.Post"]["newest_reply"]) == set(c.Post.objects.filter(thread=other).values_list("pk", flat=True))
    reply_plan = walk([p2])
    assert_collector_agrees(reply_plan)
    assert reply_plan.owned["app.Post"] == {p2.pk, p3.pk}


def test_many_to_many_auto_and_through_rows_are_exported_once_with_their_columns():
    band = c.Band.objects.create(name="Echo")
    m1, m2, m3 = (c.Musician.objects.create(name=n) for n in ("m1", "m2", "m3"))
    c.Membership.objects.create(band=band, musician=m1, instrument="drums", since=dt.date(2019, 5, 1))
    c.Membership.objects.create(band=band, musician=m2, instrument="bass", since=dt.date(2020, 1, 15))
    band.fans.add(m2, m3)
    plan = walk([band])
    assert_collector_agrees(plan)
    recs = records_of(plan)
    keys = [(r["model"], str(r["pk"]), r["role"]) for r in recs]
    assert len(keys) == len(set(keys))
    memberships = sorted((r["fields"]["instrument"], r["fields"]["since"]) for r in recs if r["model"] == "app.membership")
    assert memberships == [("bass", "2020-01-15"), ("drums", "2019-05-01")]
    assert len([r for r in recs if r["model"] == "app.band_fans"]) == 2
    assert plan.references["app.Musician"] == {m1.pk, m2.pk, m3.pk}


def test_demo_tenant_matches_the_collector_and_explains_rows():
    org = tenant("acme")
    tenant("other")
    plan = walk([org], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    assert_collector_agrees(plan)
    sheet = m.Spreadsheet.objects.get(project__org=org)
    comment = m.Comment.objects.get(document_id=sheet.pk)
    why = plan.explain("demoapp.Comment", comment.pk)
    assert why.role == "owned"
    assert [s.via for s in why.steps] == ["", "demoapp.Project.org", "demoapp.Document.project", "demoapp.Comment.document"]
    assert why.steps[0] == type(why.steps[0])("demoapp.Organisation", org.pk, "")
    invoice = m.Invoice.objects.get(org=org)
    assert [s.via for s in plan.explain(m.Invoice, str(invoice.pk)).steps] == ["", "demoapp.Invoice.org"]
    profile = m.Profile.objects.filter(current_org=org).first()
    assert plan.explain("demoapp.Profile", profile.pk).role == "update"
    eur = plan.explain("demoapp.Currency", "EUR")
    assert eur.role == "reference" and eur.steps[-1].via == "demoapp.Invoice.currency"


def test_explain_a_row_outside_the_plan_is_an_error():
    from gestore_retention.errors import ObjectSpecError

    org = tenant("acme")
    other = tenant("other")
    plan = walk([org], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    with pytest.raises(ObjectSpecError, match="not in the plan"):
        plan.explain("demoapp.Project", other.projects.get().pk)


@pytest.mark.django_db(databases=["default", "other"])
def test_a_non_default_alias_gets_every_query_and_the_default_none():
    b = c.Box.objects.using("other").create(code="elsewhere")
    sku = c.Sku.objects.using("other").create(code="S-OTHER")
    crate = c.Crate.objects.using("other").create(box=b)
    c.Bottle.objects.using("other").create(crate=crate, sku=sku)
    c.Label.objects.using("other").create(
        kind=ContentType.objects.db_manager("other").get_for_model(c.Box), ref=str(b.pk), text="l")
    c.Slot.objects.using("other").create(box=b, n=1, sku=sku)
    c.Slip.objects.using("other").create(box=b, hidden=True)
    ContentType.objects.clear_cache()
    with CaptureQueriesContext(connections["default"]) as on_default, \
            CaptureQueriesContext(connections["other"]) as on_other:
        plan = walk([(c.Box, b.pk)], using="other")
        recs = records_of(plan)
        plan.explain("app.Bottle", c.Bottle.objects.using("other").get().pk)
    assert on_default.captured_queries == []
    assert len(on_other.captured_queries) > 5
    assert plan.owned["app.Label"] and plan.owned["app.Slip"] and plan.owned["app.Slot"]
    assert {r["model"] for r in recs} >= {"app.box", "app.crate", "app.bottle", "app.sku", "app.label"}
    assert not c.Box.objects.exists()  # nothing in the default database


# Found by tests/test_walk_properties.py; the smallest examples it shrank to.
def test_a_dangling_fk_without_a_constraint_names_no_reference():
    realm = c.Realm.objects.create(code="r0")
    c.Memo.objects.create(realm=realm, node_id=10**9)  # DO_NOTHING, db_constraint=False: no such node
    plan = walk([realm])
    assert_collector_agrees(plan)
    assert "app.Node" not in plan.references  # a plan lists rows, not column values
    assert not [r for r in records_of(plan) if r["model"] == "app.node"]


def test_a_multi_table_child_keeps_the_generic_rows_of_its_parent_content_type():
    realm = c.Realm.objects.create(code="r0")
    hub = c.Hub.objects.create(realm=realm)
    as_node = c.Tag.objects.create(content_type=ContentType.objects.get_for_model(c.Node), object_id=hub.pk)
    as_hub = c.Tag.objects.create(content_type=ContentType.objects.get_for_model(c.Hub), object_id=hub.pk)
    # Deleting the child: the Collector gathers its parent row without the
    # parent's related objects, so the tag naming the Node content type stays.
    plan = walk([hub])
    assert_collector_agrees(plan)
    assert plan.owned["app.Tag"] == {as_hub.pk}
    # Deleting the parent row (or its realm) deletes both.
    for subject in (c.Node.objects.get(pk=hub.pk), realm):
        plan = walk([subject])
        assert_collector_agrees(plan)
        assert plan.owned["app.Tag"] == {as_node.pk, as_hub.pk}
    # Subjects of several models: the Collector takes them in label order
    # (app.Hub before app.Realm), so the parent row is first gathered as a parent.
    plan = walk([realm, hub])
    assert_collector_agrees(plan)
    assert plan.owned["app.Tag"] == {as_hub.pk}


def test_restrict_is_checked_over_all_the_subjects_together():
    from gestore_retention.erase import check_collector, collect

    realm = c.Realm.objects.create(code="r0")
    node = c.Node.objects.create(realm=realm)
    lock = c.Lock.objects.create(realm=realm, node=node)
    assert [(b.kind, b.model, b.pks) for b in walk([node]).blockers] == [("restrict", "app.Lock", (lock.pk,))]
    # The realm's cascade deletes the lock too: deleting both is allowed, though
    # collect() of the node alone (app.Node comes first) would refuse.
    plan = walk([node, realm])
    assert plan.blockers == ()
    check_collector(plan, collect(plan))
