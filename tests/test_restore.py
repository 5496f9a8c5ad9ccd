"""Export, erase and restore: every table comes back exactly."""
import json

import pytest

from demoapp import models as m
from gestore_retention.erase import erase
from gestore_retention.errors import BundleError, EraseRefused, RestoreError, VerificationFailed
from gestore_retention.graph.walk import Scope, walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from gestore_retention.verify import verify_restores
from tests.factories import tenant
from tests.snapshot import diff, snapshot

pytestmark = pytest.mark.django_db(transaction=True)

SCOPE = Scope.of(boundaries=["demoapp.Organisation"])


def export(plan):
    exp = Export(plan)
    return list(exp.records()), exp.digest


def export_roots(*objs, using="default", scope=None):
    """Export roots `objs` (and their graph) from `using`; return (records, digest, plan)."""
    plan = walk(list(objs), scope=scope or Scope(), using=using)
    records, digest = export(plan)
    # Through JSON, as in a bundle: tuples become lists, and nothing else may change.
    return json.loads(json.dumps(records)), digest, plan


def rows(model, using, *fields):
    """Return the rows of `model` in `using` as sorted tuples of `fields`."""
    return sorted(model._base_manager.using(using).values_list(*fields))


def test_erase_then_restore_leaves_every_table_identical(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    org = tenant("acme", files=True)
    tenant("other")
    before = snapshot()
    plan = walk([org], scope=SCOPE)
    records, digest = export(plan)
    result = erase(plan, expected_digest=digest)
    assert result.deleted["demoapp.Organisation"] == 1
    assert not m.Organisation.objects.filter(slug="acme").exists()
    assert m.Organisation.objects.filter(slug="other").exists()
    restore(records)
    assert diff(before, snapshot()) == []


def test_verification_rolls_back_and_catches_a_bad_record():
    org = tenant("acme")
    before = snapshot()
    plan = walk([org], scope=SCOPE)
    records, _ = export(plan)
    report = verify_restores(plan, lambda: iter(records))
    assert report.ok and report.compared == len(records)
    assert diff(before, snapshot()) == []
    bad = [dict(r, fields=dict(r["fields"], title="changed")) if r["model"] == "demoapp.project" and r["role"] == "owned" else r for r in records]
    # a field the table does not have
    with pytest.raises(RestoreError):
        verify_restores(plan, lambda: iter(bad))
    assert diff(before, snapshot()) == []
    bad = [dict(r, fields=dict(r["fields"], name="changed")) if r["model"] == "demoapp.project" and r["role"] == "owned" else r for r in records]
    with pytest.raises(VerificationFailed):
        # compare reads the original (unchanged) records the second time
        calls = iter([bad, records])
        verify_restores(plan, lambda: iter(next(calls)))
    assert diff(before, snapshot()) == []


def test_verification_by_digest_reads_the_records_once_and_says_where_it_differs():
    org = tenant("acme")
    before = snapshot()
    plan = walk([org], scope=SCOPE)
    records, digest = export(plan)
    opened = []

    def factory():
        opened.append(1)
        return iter(records)

    report = verify_restores(plan, factory, expected_digest=digest)
    assert report.ok and len(opened) == 1 and report.compared == plan.total_owned + sum(
        len(pks) for per in plan.updates.values() for pks in per.values())
    assert diff(before, snapshot()) == []
    bad = [dict(r, fields=dict(r["fields"], name="changed")) if r["model"] == "demoapp.project" and r["role"] == "owned" else r for r in records]
    calls = iter([bad, records])  # the second read, to say where, gets the original records
    with pytest.raises(VerificationFailed, match="field 'name': exported .*, restored 'changed'"):
        verify_restores(plan, lambda: iter(next(calls)), expected_digest=digest)
    with pytest.raises(VerificationFailed, match="do not hash to the export's digest"):
        verify_restores(plan, lambda: iter(records), expected_digest="0" * 64)
    assert diff(before, snapshot()) == []


def test_verification_by_digest_checks_the_stored_files(settings, tmp_path):
    from django.core.files.base import ContentFile

    from tests.caseapp.models import Doc

    settings.MEDIA_ROOT = str(tmp_path)
    d = Doc(title="r")
    d.attachment.save("report.pdf", ContentFile(b"the bytes"))
    plan = walk([d])
    records, digest = export(plan)
    assert verify_restores(plan, lambda: iter(records), expected_digest=digest).ok
    assert (tmp_path / "docs" / "report.pdf").read_bytes() == b"the bytes"
    tampered = [dict(r, fields={"attachment": dict(r["fields"]["attachment"], data="b3RoZXI=")})
                if r["role"] == "file" else r for r in records]
    with pytest.raises(RestoreError, match="exists in storage with other content"):
        verify_restores(plan, lambda: iter(tampered), expected_digest=digest)
    assert (tmp_path / "docs" / "report.pdf").read_bytes() == b"the bytes"
    # A file gone from storage: the trial writes it from the bundle, checks it, and removes it again.
    (tmp_path / "docs" / "report.pdf").unlink()
    report = verify_restores(plan, lambda: iter(records), expected_digest=digest)
    assert report.ok and report.compared == plan.total_owned + 1
    assert not (tmp_path / "docs" / "report.pdf").exists()


def test_erase_refuses_when_a_row_arrived_after_export():
    org = tenant("acme")
    plan = walk([org], scope=SCOPE)
    _, digest = export(plan)
    project = org.projects.get()
    m.Comment.objects.create(document=project.documents.first(), body="late", created_at=project.starts_on.isoformat() + "T00:00:00Z")
    before = snapshot()
    with pytest.raises(EraseRefused, match="new row"):
        erase(plan, expected_digest=digest)
    assert diff(before, snapshot()) == []


def test_verification_with_a_row_that_arrived_after_the_walk_changes_nothing():
    # Where FKs are checked per statement (MariaDB) the trial erase hits the
    # new row and verification refuses (export again); where they are
    # deferred the trial passes and the erase guard refuses later. Either
    # way nothing stays changed.
    org = tenant("acme")
    plan = walk([org], scope=SCOPE)
    records, _ = export(plan)
    doc = org.projects.get().documents.first()
    m.Comment.objects.create(document=doc, body="late", created_at=doc.created_at)
    before = snapshot()
    try:
        verify_restores(plan, lambda: iter(records))
    except EraseRefused as exc:
        assert "arrived since the walk" in str(exc)
    assert diff(before, snapshot()) == []


def test_erase_refuses_when_a_row_changed_after_export():
    org = tenant("acme")
    plan = walk([org], scope=SCOPE)
    _, digest = export(plan)
    m.Project.objects.filter(org=org).update(name="renamed")
    before = snapshot()
    with pytest.raises(EraseRefused, match="digest"):
        erase(plan, expected_digest=digest)
    assert diff(before, snapshot()) == []


def test_restore_into_an_empty_database_creates_references():
    org = tenant("acme")
    plan = walk([org], scope=SCOPE)
    records, digest = export(plan)
    before = snapshot()
    erase(plan, expected_digest=digest)
    # Remove the shared rows too: the bundle must carry what it needs.
    users = list(plan.references["auth.User"])
    m.Profile.objects.all().delete()
    m.Membership.objects.all().delete()
    m.Organisation.objects.all().delete()
    from django.contrib.auth.models import User
    User.objects.filter(pk__in=users).delete()
    m.Tag.objects.all().delete()
    m.Currency.objects.all().delete()
    result = restore(records)
    assert result.references_created["auth.User"] == len(users)
    after = snapshot()
    for label in ("demoapp.Project", "demoapp.Comment", "demoapp.Spreadsheet", "demoapp.Invoice", "demoapp.Reaction"):
        assert after[label] == before[label], label


def test_restore_over_existing_rows_fails_and_writes_nothing():
    org = tenant("acme")
    records, _ = export(walk([org], scope=SCOPE))
    before = snapshot()
    with pytest.raises(RestoreError, match="already exist"):
        restore(records)
    assert diff(before, snapshot()) == []


def _sent(connection, insert):
    """Return the (sql, params, many) `insert()` sends to `connection`, without executing them."""
    sent = []

    def capture(execute, sql, params, many, context):
        sent.append((sql, tuple(params), many))

    with connection.execute_wrapper(capture):
        result = insert()
    return result, sent


def test_plain_insert_sends_what_djangos_insert_compiler_sends():
    """The fast insert is the raw=True bulk insert: same statements, same parameters, or it declines."""
    from django.apps import apps
    from django.db import connection
    from django.db.models import JSONField, Value

    from gestore_retention.restore import PLAIN_INSERT_VENDORS, _info, _plain_insert

    tenant("acme")
    m.Organisation.objects.filter(slug="acme").update(churned_at=None)  # a NULL datetime too
    took = set()
    for model in apps.get_app_config("demoapp").get_models():
        objs = list(model._base_manager.all()) * 150  # beyond one batch of SQLite's 999 parameters
        if not objs or model._meta.proxy:
            continue
        fields = _info(model).fields

        def django_insert():  # as bulk_create batches it
            size = max(1, connection.ops.bulk_batch_size(fields, objs))
            for i in range(0, len(objs), size):
                model._base_manager._insert(objs[i : i + size], fields=fields, raw=True)

        expected = _sent(connection, django_insert)[1]
        done, sent = _sent(connection, lambda: _plain_insert(connection, model, fields, objs))
        assert done == (connection.vendor in PLAIN_INSERT_VENDORS and sent != []), model
        if done:
            assert sent == expected, model
            took.add(model._meta.label)
        else:
            assert sent == [], model
    if connection.vendor in PLAIN_INSERT_VENDORS:
        assert {"demoapp.Organisation", "demoapp.Project", "demoapp.Comment", "demoapp.Invoice"} <= took

    # An expression (JSON null) is left to Django's compiler.
    org = m.Organisation.objects.get(slug="acme")
    org.settings = Value(None, JSONField())
    fields = _info(m.Organisation).fields
    assert _sent(connection, lambda: _plain_insert(connection, m.Organisation, fields, [org])) == (False, [])


def _gone_tenant():
    """Export a tenant, then delete it: return (its records through JSON, the snapshot without it)."""
    org = tenant("acme")
    records, _, _ = export_roots(org, scope=SCOPE)
    org.delete()
    return records, snapshot()


def _changed(records, model, **fields):
    """The records with the first owned `model` record's fields changed."""
    out, done = [], False
    for r in records:
        if not done and r["model"] == model and r["role"] == "owned":
            r, done = dict(r, fields=dict(r["fields"], **fields)), True
        out.append(r)
    assert done, model
    return out


def test_a_dangling_reference_is_refused_before_commit_in_a_dry_run_too():
    """SQLite and PostgreSQL check foreign keys at commit: the restore checks them itself, so a dry run agrees."""
    from django.db import transaction

    records, before = _gone_tenant()
    bad = _changed(records, "demoapp.task", project=987654)
    with pytest.raises(RestoreError, match="database refused the restored rows.*nothing was restored"):
        restore(bad)
    assert diff(before, snapshot()) == []
    with pytest.raises(RestoreError, match="database refused the restored rows"):
        with transaction.atomic():  # as `importobjects --debug`: restore, then roll back
            restore(bad)
    assert diff(before, snapshot()) == []
    restore(records)  # the untouched records restore


@pytest.mark.parametrize("broken, error, message", [
    (lambda r: {k: v for k, v in r.items() if k != "pk"}, BundleError, "malformed record"),
    (lambda r: dict(r, fields="text"), BundleError, "malformed record"),
    (lambda r: dict(r, fields=dict(r["fields"], name=None)), RestoreError, "database refused the restored rows"),
])
def test_a_malformed_record_is_one_error_and_nothing_is_written(broken, error, message):
    records, before = _gone_tenant()
    i = next(i for i, r in enumerate(records) if r["model"] == "demoapp.organisation")
    with pytest.raises(error, match=message):
        restore(records[:i] + [broken(records[i])] + records[i + 1:])
    assert diff(before, snapshot()) == []


@pytest.mark.parametrize("spec, message", [
    ({"name": "docs/x.pdf", "data": "not base64!"}, "its data is not base64"),
    ({"name": "../../escape.pdf", "data": "eA=="}, "points outside the storage"),
    ({"data": "eA=="}, "needs a stored name"),
    ("text", "needs a stored name"),
])
def test_a_malformed_file_record_is_one_error_and_writes_nothing(settings, tmp_path, spec, message):
    from django.core.files.base import ContentFile

    from tests.caseapp.models import Doc

    settings.MEDIA_ROOT = str(tmp_path / "media")
    d = Doc(title="r")
    d.attachment.save("report.pdf", ContentFile(b"the bytes"))
    records, _, _ = export_roots(d)
    d.delete()
    (tmp_path / "media" / "docs" / "report.pdf").unlink()
    bad = [dict(r, fields={"attachment": spec}) if r["role"] == "file" else r for r in records]
    with pytest.raises(RestoreError, match=message):
        restore(bad)
    assert not Doc.objects.exists()
    assert not list((tmp_path / "media").rglob("*.pdf")) and not (tmp_path / "escape.pdf").exists()
