"""Restore modes and safety: conflicts reported before writing, remap, deny-list, allow-list, schema drift."""
import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType

from demoapp import models as m
from gestore_retention.errors import RestoreError
from gestore_retention.graph.walk import Scope
from gestore_retention.records import schema
from gestore_retention.restore import ConflictError, SchemaDrift, restore, schema_fields
from tests.factories import tenant
from tests.snapshot import diff, snapshot
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

SCOPE = Scope.of(boundaries=["demoapp.Organisation"])


@pytest.fixture
def acme():
    org = tenant("acme")
    tenant("other")
    records, digest, plan = export_roots(org, scope=SCOPE)
    return org, records, digest, plan


def test_fail_lists_every_conflict_per_model_and_writes_nothing(acme):
    org, records, _, plan = acme
    m.Project.objects.filter(org=org).update(name="renamed")
    before = snapshot()
    with pytest.raises(ConflictError) as exc:
        restore(records)
    owned = sum(len(v) for v in plan.owned.values())
    assert len(exc.value.conflicts) == owned  # every owned row, all reported at once
    kinds = {(c.model, c.kind) for c in exc.value.conflicts}
    assert ("demoapp.Project", "pk") in kinds and ("demoapp.Organisation", "identical") in kinds
    project = next(c for c in exc.value.conflicts if c.model == "demoapp.Project")
    assert project.fields == ("name",)
    assert "demoapp.Project" in str(exc.value) and "already exist" in str(exc.value)
    assert diff(before, snapshot()) == []


def test_a_one_shot_stream_is_checked_too(acme):
    org, records, _, _ = acme
    before = snapshot()
    with pytest.raises(ConflictError):
        restore(iter(records))
    assert diff(before, snapshot()) == []


def test_skip_identical_leaves_identical_rows_and_refuses_changed_ones(acme):
    org, records, _, plan = acme
    before = snapshot()
    result = restore(records, mode="skip-identical")
    assert sum(result.skipped.values()) == sum(len(v) for v in plan.owned.values())
    assert result.total == 0 and diff(before, snapshot()) == []
    m.Organisation.objects.filter(pk=org.pk).update(name="changed")
    changed = snapshot()
    with pytest.raises(ConflictError, match="demoapp.Organisation pk .* other values .name"):
        restore(records, mode="skip-identical")
    assert diff(changed, snapshot()) == []


def test_override_puts_the_bundles_values_back(acme):
    org, records, _, _ = acme
    exported = snapshot()
    m.Organisation.objects.filter(pk=org.pk).update(name="changed")
    m.Project.objects.filter(org=org).update(name="renamed", lead=None)
    result = restore(records, mode="override")
    assert result.overridden["demoapp.Organisation"] == 1
    assert diff(exported, snapshot()) == []


def test_override_never_steals_a_unique_value(acme):
    org, records, _, _ = acme
    m.Invoice.objects.all().delete()  # Invoice.org holds the slug (to_field)
    m.Organisation.objects.filter(slug="other").update(slug="x")
    m.Organisation.objects.filter(pk=org.pk).update(slug="moved")
    m.Organisation.objects.filter(slug="x").update(slug="acme")  # another organisation took it
    before = snapshot()
    with pytest.raises(ConflictError, match="slug='acme' already belongs to pk"):
        restore(records, mode="override")
    assert diff(before, snapshot()) == []


def test_remap_makes_a_copy_with_every_reference_rewritten(acme):
    org, records, _, plan = acme
    # The slug is unique: free it (the invoices hold it, through a to_field FK).
    m.Invoice.objects.filter(org=org).delete()
    m.Organisation.objects.filter(pk=org.pk).update(slug="acme-old")
    before = snapshot()
    result = restore(records, mode="remap")
    assert result.remapped["demoapp.Organisation"] == 1
    copy = m.Organisation.objects.get(slug="acme")
    assert copy.pk != org.pk and copy.name == org.name
    # Nothing of the original changed (the Profiles keep pointing at it).
    after = snapshot()
    for label, rows in before.items():
        for pk, row in rows.items():
            assert after[label].get(pk) == row, (label, pk)
    # FK, to_field FK, M2M, MTI, self-FK and GFK all point into the copy.
    old_project, new_project = m.Project.objects.get(org=org), m.Project.objects.get(org=copy)
    assert new_project.pk != old_project.pk and new_project.name == old_project.name
    assert sorted(new_project.tags.values_list("name", flat=True)) == ["shared", "tag-acme"]
    assert m.Task.objects.get(org=copy).project_id == new_project.pk
    docs = m.Document.objects.filter(project=new_project)
    assert docs.count() == 2 and m.Spreadsheet.objects.filter(project=new_project).count() == 1
    doc = docs.get(title="plain")
    reply = m.Comment.objects.get(document=doc, body="reply")
    assert reply.parent.document_id == doc.pk and reply.parent.body == "first"
    assert {r.target for r in m.Reaction.objects.filter(pk__in=_new_pks(before, "demoapp.Reaction"))} == {
        doc, new_project}
    invoice = m.Invoice.objects.get(org=copy)  # to_field: Invoice.org holds the slug
    assert invoice.payments.count() == 1
    assert m.Membership.objects.filter(org=copy).count() == 2


def test_remap_reports_a_unique_value_the_original_still_holds(acme):
    # The original still exists with its slug: a copy under new keys would take the slug again.
    org, records, _, _ = acme
    before = snapshot()
    with pytest.raises(ConflictError, match=f"demoapp.Organisation pk {org.pk}: slug='acme' already belongs to pk {org.pk}"):
        restore(records, mode="remap")
    assert diff(before, snapshot()) == []


def _new_pks(before, label):
    model = m.Reaction
    return set(model.objects.values_list("pk", flat=True)) - set(before[label])


def test_reference_users_get_safe_values_and_owned_users_keep_theirs():
    admin = User.objects.create(username="boss", is_superuser=True, is_staff=True, password="pbkdf2_sha256$x")
    org = tenant("acme", users=[admin, User.objects.create(username="m")])
    records, _, _ = export_roots(org, scope=SCOPE)
    restore(records, using="other")
    copy = User.objects.using("other").get(username="boss")
    assert not copy.is_superuser and not copy.is_staff and not copy.has_usable_password()
    # A user the scope owns is restored as it was.
    records, _, _ = export_roots(admin)
    restore(records, using="other", mode="override")
    assert User.objects.using("other").get(username="boss").is_superuser


def test_reference_rows_are_matched_by_natural_key():
    org = tenant("acme")
    records, _, _ = export_roots(org, scope=SCOPE)
    # The target already has the owner, under another key.
    User.objects.using("other").create(pk=999, username="acme-owner")
    result = restore(records, using="other")
    assert result.references_matched["auth.User"] >= 1
    restored = m.Organisation.objects.using("other").get()
    assert restored.owner_id == 999
    assert User.objects.using("other").filter(username="acme-owner").count() == 1


def test_allow_list():
    org = tenant("acme")
    records, _, _ = export_roots(org, scope=SCOPE)
    with pytest.raises(RestoreError, match="auth.User: not in the allowed models"):
        restore(records, using="other", models_allowed=["demoapp", "contenttypes"])
    assert not m.Organisation.objects.using("other").exists()
    restore(records, using="other", models_allowed=["demoapp", "contenttypes", "auth.user"])
    assert m.Organisation.objects.using("other").exists()


def test_schema_drift_is_reported_field_by_field(acme):
    org, records, digest, plan = acme
    labels = {r["model"] for r in records}
    real, fields = schema(labels), schema_fields(labels)
    # The bundle was made before Project.budget existed and when Task.title was a TextField.
    real["demoapp.project"] = real["demoapp.task"] = "0" * 16
    old = {k: dict(v) for k, v in fields.items()}
    del old["demoapp.project"]["budget"]
    old["demoapp.task"]["title"] = "TextField"
    old["demoapp.task"]["gone"] = "IntegerField"
    with pytest.raises(SchemaDrift) as exc:
        restore(records, schema=real, schema_fields=old, allow_additive=True)
    assert set((lb, f, change) for lb, f, change, _ in exc.value.drift) == {
        ("demoapp.project", "budget", "added"), ("demoapp.task", "title", "changed"),
        ("demoapp.task", "gone", "removed")}
    message = str(exc.value)
    assert "demoapp.task.title changed (TextField -> CharField)" in message, message


def test_additive_drift_needs_saying_so():
    org = tenant("acme")
    records, digest, plan = export_roots(org, scope=SCOPE)
    labels = {r["model"] for r in records}
    real, fields = schema(labels), schema_fields(labels)
    real["demoapp.invoice"] = "0" * 16
    del fields["demoapp.invoice"]["paid_on"]  # nullable: an additive change
    for r in records:
        if r["model"] == "demoapp.invoice":
            del r["fields"]["paid_on"]
    with pytest.raises(SchemaDrift, match="demoapp.invoice.paid_on added"):
        restore(records, using="other", schema=real, schema_fields=fields)
    assert not m.Organisation.objects.using("other").exists()
    restore(records, using="other", schema=real, schema_fields=fields, allow_additive=True)
    assert m.Invoice.objects.using("other").get().paid_on is None


def test_content_types_are_never_copied():
    org = tenant("acme")
    records, _, _ = export_roots(org, scope=SCOPE)
    count = ContentType.objects.using("other").count()
    restore(records, using="other")
    assert ContentType.objects.using("other").count() == count


def test_rows_between_the_bundles_keys_are_neither_conflicts_nor_touched():
    # The keys 1..3 of a batch are read as one range: the row in between is not the bundle's.
    tags = [m.Tag.objects.create(name=f"t{i}") for i in range(3)]
    first, middle, last = tags
    records = [{"model": "demoapp.tag", "pk": t.pk, "fields": {"name": t.name}} for t in (first, last)]
    m.Tag.objects.filter(pk__in=[first.pk, last.pk]).delete()
    m.Tag.objects.filter(pk=middle.pk).update(name="kept")
    result = restore(records)
    assert result.inserted == {"demoapp.Tag": 2}
    assert sorted(m.Tag.objects.values_list("pk", "name")) == [(first.pk, "t0"), (middle.pk, "kept"), (last.pk, "t2")]
    m.Tag.objects.filter(pk=last.pk).update(name="changed")
    with pytest.raises(ConflictError) as exc:
        restore(records)
    assert {(c.key, c.kind) for c in exc.value.conflicts} == {(first.pk, "identical"), (last.pk, "pk")}
