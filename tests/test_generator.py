"""The demo data generator: deterministic for a seed, the status mix it promises,
exactly one legal hold, and the relations the engine's tests rely on."""
import hashlib
import json
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db.models import Count, F

from demoapp.generator import HOLD_REASON, GeneratorError, generate, status_plan
from demoapp.models import (
    Comment,
    Currency,
    Document,
    Invoice,
    Membership,
    Organisation,
    Payment,
    Profile,
    Project,
    Reaction,
    Spreadsheet,
    Tag,
    Task,
)
from gestore_retention.models import LegalHold

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=dt_timezone.utc)
User = get_user_model()
MODELS = [
    User, Currency, Tag, Organisation, Membership, Profile, Project, Project.tags.through,
    Task, Document, Spreadsheet, Comment, Reaction, Invoice, Payment, LegalHold,
]
AUTO_PK = ("AutoField", "BigAutoField", "SmallAutoField")


def _wipe():
    LegalHold.objects.all().delete()
    Organisation.objects.all().delete()  # cascades to everything a tenant owns
    Currency.objects.all().delete()
    Tag.objects.all().delete()
    User.objects.all().delete()
    for model in MODELS:
        assert not model._base_manager.exists(), model


def _dump(storage):
    """Every generated row as text, auto-increment keys replaced by their rank.

    Rows are inserted in a deterministic order, so the n-th row of a table
    has the same content in two runs even though its id differs.
    """
    ranks = {
        model: {pk: i for i, pk in enumerate(model._base_manager.order_by("pk").values_list("pk", flat=True))}
        for model in MODELS
    }

    def norm(model, field, value, row):
        if value is None:
            return None
        if field.primary_key and field.get_internal_type() in AUTO_PK:
            return ("rank", ranks[model][value])
        if field.is_relation:
            target = field.related_model
            if target is ContentType:
                return ContentType.objects.get_for_id(value).model_class()._meta.label
            if field.target_field.primary_key and field.target_field.get_internal_type() in AUTO_PK:
                return ("rank", target._meta.label, ranks[target][value])
            return value  # a natural key: Invoice.org -> slug, Invoice.currency -> code
        if model is Reaction and field.name == "object_id":
            ct = ContentType.objects.get_for_id(row["content_type_id"]).model_class()
            return ("rank", ct._meta.label, ranks[ct][value])
        if model is LegalHold and field.name == "subject_pk":
            return ("rank", ranks[Organisation][int(value)])
        if isinstance(value, memoryview):
            return bytes(value)
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        return value

    lines = []
    for model in MODELS:
        fields = model._meta.concrete_fields
        for row in model._base_manager.order_by("pk").values(*[f.attname for f in fields]):
            values = [norm(model, f, row[f.attname], row) for f in fields]
            lines.append(f"{model._meta.label} {values!r}")
    for name in sorted(Document.objects.exclude(attachment="").values_list("attachment", flat=True)):
        with storage.open(name) as fh:
            lines.append(f"file {name} {hashlib.sha256(fh.read()).hexdigest()}")
    return lines


def _run(tmp_path, label, **kwargs):
    storage = FileSystemStorage(location=tmp_path / label)
    counts = generate(now=NOW, storage=storage, **kwargs)
    return counts, _dump(storage)


@pytest.mark.django_db
def test_same_seed_same_data(tmp_path):
    counts1, dump1 = _run(tmp_path, "a", tenants=5, scale=1, seed=7)
    _wipe()
    counts2, dump2 = _run(tmp_path, "b", tenants=5, scale=1, seed=7)
    assert counts1 == counts2
    assert len(dump1) == len(dump2) > 500
    assert dump1 == dump2
    _wipe()
    counts3, dump3 = _run(tmp_path, "c", tenants=5, scale=1, seed=8)
    assert dump3 != dump1


@pytest.mark.django_db
def test_counts_match_the_database(tmp_path):
    counts, _ = _run(tmp_path, "a", tenants=4, scale=2, seed=1)
    for model in MODELS:
        assert counts[model._meta.label] == model._base_manager.count(), model
    assert counts["files"] == Document.objects.exclude(attachment="").count() > 0
    # scale 2 is a few hundred rows per tenant at least
    assert sum(v for k, v in counts.items() if k != "files") > 4 * 300


@pytest.mark.django_db
def test_status_mix_and_one_hold(tmp_path):
    _run(tmp_path, "a", tenants=12, scale=1, seed=42)
    active, long_churned, recent = status_plan(12)
    assert (active, long_churned, recent) == (7, 3, 2)

    orgs = list(Organisation.objects.all())
    assert len(orgs) == 12
    assert sum(o.status == "active" and o.churned_at is None for o in orgs) == active
    churned = [o for o in orgs if o.status == "churned"]
    long_ago = [o for o in churned if NOW - timedelta(days=400) <= o.churned_at <= NOW - timedelta(days=120)]
    lately = [o for o in churned if NOW - timedelta(days=60) <= o.churned_at <= NOW - timedelta(days=10)]
    assert (len(long_ago), len(lately)) == (long_churned, recent)
    assert all(o.created_at < (o.churned_at or NOW) for o in orgs)

    hold = LegalHold.objects.get()  # exactly one
    assert hold.subject_label == "demoapp.Organisation"
    assert hold.reason == HOLD_REASON and hold.placed_at == NOW and hold.released_at is None
    assert int(hold.subject_pk) in {o.pk for o in long_ago}


@pytest.mark.parametrize("tenants", [1, 2, 3, 5, 12, 40])
def test_status_plan_small_and_large(tenants):
    active, long_churned, recent = status_plan(tenants)
    assert active + long_churned + recent == tenants
    assert long_churned >= 1 and min(active, recent) >= 0
    if tenants >= 8:
        assert 0.4 <= active / tenants <= 0.65


@pytest.mark.django_db
def test_relations_are_exercised(tmp_path):
    _run(tmp_path, "a", tenants=12, scale=1, seed=42)
    # Users shared by two organisations, never more.
    per_user = Membership.objects.values("user").annotate(n=Count("org")).values_list("n", flat=True)
    assert max(per_user) == 2
    # Every user has a profile whose current organisation is one of theirs.
    assert Profile.objects.count() == User.objects.count()
    for profile in Profile.objects.select_related("user"):
        assert profile.current_org_id in set(profile.user.memberships.values_list("org_id", flat=True))
    # The owner is a member with role "owner".
    for org in Organisation.objects.all():
        assert org.memberships.get(user=org.owner).role == "owner"
    assert not Task.objects.exclude(org=F("project__org")).exists()
    assert Project.tags.through.objects.exists()
    assert Spreadsheet.objects.exists() and Document.objects.exclude(attachment="").exists()
    assert all(len(bytes(c)) == 32 for c in Document.objects.values_list("checksum", flat=True))
    assert Comment.objects.filter(parent__isnull=False).exists()
    assert not Comment.objects.filter(parent__isnull=False).exclude(document=F("parent__document")).exists()
    reacted = set(Reaction.objects.values_list("content_type__model", flat=True))
    assert reacted == {"document", "project"}
    assert Invoice.objects.filter(org__status="churned").exists()
    assert {i.id.version for i in Invoice.objects.all()} == {4}
    assert Payment.objects.exists()
    assert Currency.objects.count() == 3 and Tag.objects.count() == 10


@pytest.mark.django_db
def test_refuses_a_database_with_organisations(tmp_path):
    _run(tmp_path, "a", tenants=2, seed=1)
    with pytest.raises(GeneratorError, match="already holds organisations"):
        _run(tmp_path, "b", tenants=2, seed=1)


@pytest.mark.django_db
def test_gendemo_command(tmp_path, settings, capsys):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    call_command("gendemo", "--tenants", "3", "--seed", "5", "--now", "2026-06-01T12:00:00")
    out = capsys.readouterr().out
    assert "3 tenants:" in out and "demoapp.Invoice" in out and "rows in all" in out
    assert Organisation.objects.count() == 3
    assert LegalHold.objects.get().placed_at == NOW  # naive --now is UTC


@pytest.mark.django_db
@pytest.mark.parametrize("args, message", [
    (["--now", "yesterday"], "not an ISO 8601 datetime"),
])
def test_gendemo_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("gendemo", *args)
    assert not Organisation.objects.exists()
