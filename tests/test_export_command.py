"""exportobjects: --plan, --explain, --debug and --database, from the command line."""
import io
import json

import pytest
from django.core.management import CommandError, call_command

from demoapp import models as m
from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from tests.caseapp import models as c
from tests.factories import tenant

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command("exportobjects", *args, stdout=out)
    return out.getvalue()


def test_plan_prints_rows_per_model_and_role_and_writes_nothing(retention_env):
    org = tenant("acme")
    text = run(f"demoapp.Organisation.{org.pk}", "--plan")
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert lines["demoapp.Project"] == ["1"]
    assert lines["demoapp.Comment"] == ["3"]
    assert not (retention_env / "bundles").exists() or not any((retention_env / "bundles").iterdir())


def test_explain_prints_the_path_from_the_subject(retention_env):
    org = tenant("acme")
    comment = m.Comment.objects.filter(document__project__org=org, parent__isnull=False).get()
    text = run(f"demoapp.Organisation.{org.pk}", "--explain", f"demoapp.Comment.{comment.pk}",
               "--explain", "demoapp.Currency.EUR")
    assert text.splitlines() == [
        f"demoapp.Comment {comment.pk!r}: owned",
        f"  demoapp.Organisation {org.pk!r}",
        f"  --demoapp.Project.org--> demoapp.Project {comment.document.project_id!r}",
        f"  --demoapp.Document.project--> demoapp.Document {comment.document_id!r}",
        # The shortest path: the reply is in the document itself, not only under its parent.
        f"  --demoapp.Comment.document--> demoapp.Comment {comment.pk!r}",
        "demoapp.Currency 'EUR': reference",
        f"  demoapp.Organisation {org.pk!r}",
        f"  --demoapp.Invoice.org--> demoapp.Invoice {m.Invoice.objects.get(org=org).pk!r}",
        "  --demoapp.Invoice.currency--> demoapp.Currency 'EUR'",
    ]


def test_explain_errors_name_the_row(retention_env):
    org = tenant("acme")
    other = tenant("other")
    with pytest.raises(CommandError, match="not in the plan"):
        run(f"demoapp.Organisation.{org.pk}", "--explain", f"demoapp.Project.{other.projects.get().pk}")
    with pytest.raises(CommandError, match="expected <app_label>.<Model>.<pk>"):
        run(f"demoapp.Organisation.{org.pk}", "--explain", "demoapp.Project")


def test_debug_prints_records_as_json_lines(retention_env):
    org = tenant("acme")
    records = [json.loads(line) for line in run(f"demoapp.Organisation.{org.pk}", "--debug").splitlines()]
    assert {r["role"] for r in records} == {"owned", "reference", "update"}
    assert all(set(r) <= {"model", "pk", "fields", "role", "natural_key", "json_null"} for r in records)
    assert [r["pk"] for r in records if r["model"] == "demoapp.organisation"] == [org.pk]


def test_composite_pk_object_spec(retention_env):
    b = c.Box.objects.create(code="b")
    c.Slot.objects.create(box=b, n=3)
    records = [json.loads(line) for line in run(f"app.Slot.[{b.pk}, 3]", "--debug").splitlines()]
    assert [(r["model"], r["pk"]) for r in records if r["role"] == "owned"] == [("app.slot", [b.pk, 3])]


@pytest.mark.django_db(databases=["default", "other"])
def test_database_option_reads_only_that_alias(retention_env):
    b = c.Box.objects.using("other").create(code="only-there")
    c.Lid.objects.using("other").create(box=b, color="blue")
    text = run(f"app.Box.{b.pk}", "--database", "other", "--debug")
    models_ = sorted({json.loads(line)["model"] for line in text.splitlines()})
    assert models_ == ["app.box", "app.lid"]
    with pytest.raises(CommandError, match="no object with pk"):
        run(f"app.Box.{b.pk}", "--debug")  # not in the default database


def test_every_kind_of_record_carries_its_canonical_text(retention_env):
    """Owned, reference (with natural keys) and update records: the text encoded once is json.dumps, sorted."""
    records = list(Export(walk([tenant("acme")])).records())
    assert {r["role"] for r in records} == {"owned", "reference", "update"}
    assert any("natural_key" in r for r in records)
    for record in records:
        assert record.text == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
