"""The walk: owned set, updates, references, boundaries, blockers."""
import pytest
from django.db.models.deletion import Collector

from demoapp import models as m
from gestore_retention.erase import collect, collected_keys
from gestore_retention.graph.walk import Scope, walk
from tests.factories import tenant

pytestmark = pytest.mark.django_db


def test_owned_set_is_what_the_collector_deletes():
    org = tenant("acme")
    tenant("other")
    plan = walk([org], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    deleted, changed = collected_keys(collect(plan))
    assert {k: set(v) for k, v in plan.owned.items()} == dict(deleted)
    assert plan.owned["demoapp.Document"] == frozenset(m.Document.objects.filter(project__org=org).values_list("pk", flat=True))
    assert len(plan.owned["demoapp.Spreadsheet"]) == 1
    assert len(plan.owned["demoapp.Project_tags"]) == 2
    assert len(plan.owned["demoapp.Reaction"]) == 2
    # Profiles pointing at the org are changed (SET_NULL), not deleted.
    assert plan.updates["demoapp.Profile"]["current_org"] == frozenset(
        m.Profile.objects.filter(current_org=org).values_list("pk", flat=True)
    )
    assert set(changed["demoapp.Profile"]) == set(plan.updates["demoapp.Profile"]["current_org"])


def test_references_are_the_forward_closure_and_never_another_tenants_rows():
    org = tenant("acme")
    other = tenant("other")
    plan = walk([org], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    assert set(plan.references["auth.User"]) == set(org.members.values_list("pk", flat=True))
    assert "demoapp.Currency" in plan.references
    assert "contenttypes.ContentType" in plan.references
    other_plan = walk([other])
    for label, pks in other_plan.owned.items():
        assert not (pks & plan.owned.get(label, frozenset())), label
        assert not (pks & plan.references.get(label, frozenset())), label


def test_proxy_root_walks_its_concrete_row():
    org = tenant("acme")
    proxy = m.ChurnedOrganisation.objects.get(pk=org.pk)
    assert walk([proxy]).owned == walk([org]).owned
    assert walk([proxy]).subjects == (("demoapp.Organisation", org.pk),)


def test_query_count_does_not_grow_with_rows(django_assert_max_num_queries):
    small = tenant("small")
    plan_small = walk([small])
    big = tenant("big")
    project = big.projects.get()
    m.Comment.objects.bulk_create(
        m.Comment(document=project.documents.first(), body=str(i), created_at=project.documents.first().created_at)
        for i in range(500)
    )
    plan_big = walk([big])
    assert plan_big.total_owned > plan_small.total_owned + 400
    assert plan_big.queries == plan_small.queries


def test_protect_and_restrict_are_blockers():
    org = tenant("acme")
    project = org.projects.get()
    # RESTRICT: a project's tasks block deleting the project alone...
    plan = walk([project])
    assert [b.kind for b in plan.blockers] == ["restrict"]
    assert plan.blockers[0].model == "demoapp.Task"
    # ...but not the organisation, which cascades to the tasks too.
    assert walk([org]).blockers == ()
    # PROTECT: a currency with invoices.
    plan = walk([m.Currency.objects.get(code="EUR")])
    assert plan.blockers[0].kind == "protect"
    assert "demoapp.Invoice.currency" in str(plan.blockers[0])


def test_tree_puts_each_owned_model_under_the_relation_that_reaches_it():
    org = tenant("acme")
    plan = walk([org])
    tree = plan.tree()
    assert tree[0] == (0, "demoapp.Organisation", "", 1)
    rows = {label: (depth, via, n) for depth, label, via, n in tree}
    assert rows["demoapp.Payment"] == (2, "demoapp.Payment.invoice", 1)
    assert rows["demoapp.Comment"][0] == 3  # organisation -> project -> document -> comment
    assert {label for _, label, _, _ in tree} == set(plan.owned)
    assert sum(n for *_, n in tree) == plan.total_owned
