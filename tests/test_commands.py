"""The management commands end to end: real commands, real files, real database.

exportobjects, importobjects, deleteobjects and `retention` are called through
`call_command` against the test database, with fresh keys and bundle storage
under tmp_path (the `retention_env` fixture). Every table is compared with
`tests.snapshot` before and after.
"""
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError

from demoapp import models as m
from gestore_retention import sweep
from gestore_retention.graph import relations
from gestore_retention.graph.walk import walk
from gestore_retention.models import AuditEvent, Bundle, Job, LegalHold, Run
from gestore_retention.policy import get_policy
from gestore_retention.records import ModelCodec
from tests.factories import tenant
from tests.snapshot import diff, snapshot

ROOT = Path(__file__).resolve().parent.parent
POLICY = "churned-tenants"
GESTORE_COMMANDS = ("exportobjects", "importobjects", "deleteobjects", "retention", "bundle")

pytestmark = pytest.mark.django_db(transaction=True)


# -- helpers -----------------------------------------------------------------

def run(*args, **options):
    """call_command, returning (stdout, stderr) as text."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def stored(env):
    """Names of the files in the bundle storage."""
    directory = Path(env) / "bundles"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def events(**filters):
    return list(AuditEvent.objects.filter(**filters).order_by("seq").values_list("action", "subject_pk"))


def spec(obj):
    return f"{obj._meta.label}.{obj.pk}"


def owned_rows(obj, scope=None):
    """{label: {pk}} of what erasing `obj` removes (labels as snapshot() keys them)."""
    plan = walk([obj], scope=scope)
    out = {}
    for label, pks in plan.owned.items():
        encode = ModelCodec.of(relations.get_model(label)).pk_encoder
        out[label] = {encode(pk) for pk in pks}
    return out


def without(snap, owned):
    """`snap` minus the rows in `owned` ({label: {pk}})."""
    out = {}
    for label, rows in snap.items():
        gone = owned.get(label, set())
        out[label] = {pk: row for pk, row in rows.items() if pk not in gone}
    return out


def only(snap, owned):
    """The rows of `snap` that are in `owned`."""
    return {label: {pk: row for pk, row in snap.get(label, {}).items() if pk in pks}
            for label, pks in owned.items()}


def null_profile_orgs(snap, org_pk):
    """`snap` with the Profiles pointing at `org_pk` set to NULL (SET_NULL)."""
    out = dict(snap)
    profiles = {}
    for pk, row in snap["demoapp.Profile"].items():
        profiles[pk] = dict(row, current_org=None) if row["current_org"] == org_pk else row
    out["demoapp.Profile"] = profiles
    return out


@pytest.fixture
def env(retention_env):
    return retention_env


@pytest.fixture
def two_tenants(env):
    acme = tenant("acme", files=True)
    other = tenant("other")
    return acme, other


# -- exportobjects -----------------------------------------------------------

def test_export_plan_prints_a_table_of_models_and_writes_nothing(env, two_tenants):
    acme, _ = two_tenants
    before = snapshot()
    out, _ = run("exportobjects", spec(acme), "--plan")
    lines = out.splitlines()
    assert lines[0].split() == ["model", "owned", "updates", "references"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    for label in ("demoapp.Organisation", "demoapp.Project", "demoapp.Task", "demoapp.Document",
                  "demoapp.Invoice", "demoapp.Payment", "demoapp.Membership"):
        assert label in rows, out
    assert rows["demoapp.Organisation"][0] == "1"
    assert rows["demoapp.Project"][0] == "1"
    assert "demoapp.Currency" in rows  # a reference: Invoice.currency
    assert stored(env) == [] and events() == [] and not Bundle.objects.exists()
    assert diff(before, snapshot()) == []


def test_export_debug_prints_json_lines_and_writes_nothing(env, two_tenants):
    acme, other = two_tenants
    before = snapshot()
    out, _ = run("exportobjects", spec(acme), "--debug")
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert records
    for record in records:
        assert {"model", "pk", "fields", "role"} <= set(record), record
        assert record["role"] in ("owned", "update", "reference", "file")
    owned = {(r["model"].lower(), str(r["pk"])) for r in records if r["role"] == "owned"}
    assert ("demoapp.organisation", str(acme.pk)) in owned
    assert ("demoapp.organisation", str(other.pk)) not in {(r["model"].lower(), str(r["pk"])) for r in records}
    projects = [r for r in records if r["model"].lower() == "demoapp.project" and r["role"] == "owned"]
    assert [p["fields"]["name"] for p in projects] == ["P1"]
    assert {r["model"].lower() for r in records if r["role"] == "reference"} >= {"demoapp.currency", "auth.user"}
    # -d is the same option
    assert run("exportobjects", spec(acme), "-d")[0] == out
    assert stored(env) == [] and events() == [] and not Bundle.objects.exists()
    assert diff(before, snapshot()) == []


def test_export_writes_a_bundle_to_storage_with_one_audit_event(env, two_tenants):
    acme, _ = two_tenants
    before = snapshot()
    out, _ = run("exportobjects", spec(acme))
    bundle = Bundle.objects.get()
    assert bundle.id in out
    assert sorted(stored(env)) == sorted([bundle.name, bundle.name + ".minisig"])
    assert (bundle.subject_label, bundle.subject_pk) == ("demoapp.Organisation", str(acme.pk))
    assert bundle.size == (Path(env) / "bundles" / bundle.name).stat().st_size
    assert events() == [("subject-export", str(acme.pk))]
    assert diff(before, snapshot()) == []
    # The bundle command can verify what exportobjects stored.
    out, _ = run("bundle", "verify", str(Path(env) / "bundles" / bundle.name), "--json")
    assert json.loads(out)["status"] == "OK"


def test_export_output_writes_file_and_signature_with_one_audit_event(env, two_tenants, tmp_path):
    acme, _ = two_tenants
    before = snapshot()
    target = tmp_path / "out" / "acme.age"
    target.parent.mkdir()
    out, _ = run("exportobjects", spec(acme), "-o", str(target))
    assert str(target) in out
    assert sorted(p.name for p in target.parent.iterdir()) == ["acme.age", "acme.age.minisig"]
    assert target.stat().st_size > 0 and (tmp_path / "out" / "acme.age.minisig").stat().st_size > 0
    assert events() == [("subject-export", str(acme.pk))]
    assert stored(env) == [] and not Bundle.objects.exists()
    assert diff(before, snapshot()) == []
    out, _ = run("bundle", "verify", str(target), "--json")
    assert json.loads(out)["status"] == "OK"


# -- deleteobjects and importobjects -------------------------------------------

def test_delete_dry_run_shows_counts_and_changes_nothing(env, two_tenants):
    acme, _ = two_tenants
    before = snapshot()
    n = sum(len(v) for v in owned_rows(acme).values())
    out, _ = run("deleteobjects", spec(acme), "--dry-run")
    assert f"{spec(acme)}: would delete {n} rows" in out
    assert "demoapp.Organisation" in out and "demoapp.Payment" in out
    # The tree: each model under the one whose relation reaches it.
    assert "\n  demoapp.Invoice: 1  (via demoapp.Invoice.org)\n    demoapp.Payment: 1  (via demoapp.Payment.invoice)" in out
    assert diff(before, snapshot()) == []
    assert stored(env) == [] and events() == [] and not Bundle.objects.exists()


def media_files(env):
    root = Path(env) / "media"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_delete_removes_exactly_the_owned_set_with_one_verified_bundle(env, two_tenants):
    acme, other = two_tenants
    before = snapshot()
    owned = owned_rows(acme)
    other_owned = owned_rows(other)
    files = media_files(env)
    acme_files = {name for name in files if "acme" in name}
    assert acme_files
    out, _ = run("deleteobjects", spec(acme))
    # The erased tenant's uploaded files went with its rows (the bundle has their bytes); the other's stay.
    assert set(media_files(env)) == set(files) - acme_files
    after = snapshot()
    # Exactly the owned set went; the Profiles that pointed at acme were SET_NULL.
    assert diff(null_profile_orgs(without(before, owned), acme.pk), after) == []
    assert only(after, other_owned) == only(before, other_owned)
    assert m.Organisation.objects.filter(pk=other.pk).exists()
    bundle = Bundle.objects.get()
    assert bundle.verified_at is not None
    assert bundle.id in out and "deleted" in out
    assert sorted(stored(env)) == sorted([bundle.name, bundle.name + ".minisig"])
    assert events() == [("export", str(acme.pk)), ("verify", str(acme.pk)), ("erase", str(acme.pk))]
    assert set(AuditEvent.objects.values_list("bundle_id", flat=True)) == {bundle.id}


def test_import_restores_a_deleted_subject_exactly(env, two_tenants):
    acme, _ = two_tenants
    before = snapshot()
    assert any(row["current_org"] == acme.pk for row in before["demoapp.Profile"].values())
    files_before = media_files(env)
    run("deleteobjects", spec(acme))
    assert media_files(env) != files_before
    bundle = Bundle.objects.get()
    path = Path(env) / "bundles" / bundle.name
    assert diff(before, snapshot()) != []
    out, _ = run("importobjects", str(path))
    assert "restored demoapp.Organisation" in out
    assert diff(before, snapshot()) == []
    assert media_files(env) == files_before  # the uploaded files are back, byte for byte
    assert [a for a, _ in events()] == ["export", "verify", "erase", "restore"]
    # Files come back too.
    doc = m.Document.objects.exclude(attachment="").get(project__org=acme)
    assert doc.attachment.read().startswith(b"%PDF")


def test_import_debug_is_a_dry_run(env, two_tenants):
    acme, _ = two_tenants
    run("deleteobjects", spec(acme))
    path = Path(env) / "bundles" / Bundle.objects.get().name
    erased = snapshot()
    n_events = AuditEvent.objects.count()
    media = sorted(p.relative_to(env) for p in (Path(env) / "media").rglob("*"))
    for flag in ("-d", "--debug"):
        out, _ = run("importobjects", str(path), flag)
        assert "would restore demoapp.Organisation" in out and "rolled back" in out
        assert diff(erased, snapshot()) == []
        assert AuditEvent.objects.count() == n_events
        assert sorted(p.relative_to(env) for p in (Path(env) / "media").rglob("*")) == media


def test_import_over_existing_rows_fails_and_override_overwrites(env, two_tenants, tmp_path):
    acme, _ = two_tenants
    target = tmp_path / "acme.age"
    run("exportobjects", spec(acme), "-o", str(target))
    exported = snapshot()
    # Change some rows the bundle holds.
    m.Organisation.objects.filter(pk=acme.pk).update(name="renamed")
    m.Project.objects.filter(org=acme).update(name="P-renamed")
    changed = snapshot()
    n_events = AuditEvent.objects.count()
    with pytest.raises(CommandError) as exc:
        run("importobjects", str(target))
    assert "demoapp.Organisation" in str(exc.value) or "exist" in str(exc.value)
    assert diff(changed, snapshot()) == []
    assert AuditEvent.objects.count() == n_events
    out, _ = run("importobjects", str(target), "--override")
    assert "restored" in out
    assert diff(exported, snapshot()) == []
    assert AuditEvent.objects.count() == n_events + 1


def test_import_by_bundle_id(env, two_tenants):
    acme, _ = two_tenants
    before = snapshot()
    run("deleteobjects", spec(acme))
    run("importobjects", Bundle.objects.get().id)
    assert diff(before, snapshot()) == []


@pytest.mark.parametrize("target, blocker", [
    ("project", "demoapp.Task.project"),      # RESTRICT
    ("currency", "demoapp.Invoice.currency"),  # PROTECT
])
def test_delete_refuses_a_protect_or_restrict_blocker(env, two_tenants, target, blocker):
    acme, _ = two_tenants
    obj = acme.projects.get() if target == "project" else m.Currency.objects.get(code="EUR")
    before = snapshot()
    with pytest.raises(CommandError) as exc:
        run("deleteobjects", spec(obj))
    assert blocker in str(exc.value)
    assert diff(before, snapshot()) == []
    assert stored(env) == [] and events() == [] and not Bundle.objects.exists()
    # --dry-run shows the blocker too, and fails as the erasure would.
    with pytest.raises(CommandError, match="dry run: the erasure would be refused") as exc:
        run("deleteobjects", spec(obj), "--dry-run")
    assert blocker in str(exc.value)
    assert diff(before, snapshot()) == []


# -- retention run -------------------------------------------------------------

@pytest.fixture
def demo(env):
    """gendemo's 12 tenants; returns (selected, held, others) organisations."""
    run("gendemo", tenants=12, scale=1, seed=42)
    policy = get_policy(POLICY)
    import django.utils.timezone as tz

    selected = list(policy.queryset(now=tz.now()))
    held_pks = set(LegalHold.objects.filter(subject_label="demoapp.Organisation").values_list("subject_pk", flat=True))
    held = [o for o in m.Organisation.objects.all() if str(o.pk) in held_pks]
    others = [o for o in m.Organisation.objects.all() if o not in selected and o not in held]
    assert len(selected) == 2 and len(held) == 1 and len(others) == 9
    assert all(o.status == "churned" for o in selected + held)
    return selected, held, others


def scope():
    return sweep.scope_of(get_policy(POLICY))


def tenant_rows(orgs):
    """{label: {pk}} owned by `orgs`, under the policy's scope."""
    out = {}
    for org in orgs:
        for label, pks in owned_rows(org, scope()).items():
            out.setdefault(label, set()).update(pks)
    return out


def test_retention_run_erases_the_selected_tenants_once(env, demo):
    selected, held, others = demo
    before = snapshot()
    kept = tenant_rows(held + others)
    erased = tenant_rows(selected)
    out, _ = run("retention", "run", POLICY)
    assert "2 selected" in out
    after = snapshot()
    for org in selected:
        assert not m.Organisation.objects.filter(pk=org.pk).exists()
        bundles = Bundle.objects.filter(subject_label="demoapp.Organisation", subject_pk=str(org.pk))
        assert len(bundles) == 1 and bundles[0].verified_at is not None
        assert bundles[0].policy == POLICY
        for action in ("export", "verify", "erase"):
            assert AuditEvent.objects.filter(action=action, subject_pk=str(org.pk)).count() == 1
    assert Bundle.objects.count() == 2
    assert len(stored(env)) == 4
    # The held tenant and every other one: untouched, row for row.
    assert only(after, kept) == only(before, kept)
    for label, pks in erased.items():
        assert not set(after.get(label, {})) & pks, label
    # Nothing else went than the erased owned sets.
    for label, rows in before.items():
        assert set(rows) - set(after[label]) <= erased.get(label, set()), label
    out, _ = run("retention", "audit-verify")
    assert out.strip()
    assert all(j.stage == Job.CLOSED for j in Job.objects.all())

    # Running again erases nothing new and creates no bundle.
    n_events = AuditEvent.objects.count()
    out, _ = run("retention", "run", POLICY)
    assert "0 selected" in out
    assert diff(after, snapshot()) == []
    assert Bundle.objects.count() == 2 and len(stored(env)) == 4
    assert AuditEvent.objects.count() == n_events
    run("retention", "audit-verify")


def test_retention_run_dry_run_writes_nothing(env, demo):
    selected, _, _ = demo
    before = snapshot()
    n_events = AuditEvent.objects.count()
    out, _ = run("retention", "run", POLICY, "--dry-run")
    assert "2 subject(s) selected" in out and "dry run: nothing written" in out
    for org in selected:
        assert f"demoapp.Organisation.{org.pk}" in out
    assert diff(before, snapshot()) == []
    assert not Run.objects.exists() and not Job.objects.exists() and not Bundle.objects.exists()
    assert AuditEvent.objects.count() == n_events
    assert stored(env) == []


def test_retention_run_with_nothing_selected_says_so(env):
    out, _ = run("retention", "run", POLICY, "--dry-run")
    assert "  0 subjects selected\n" in out and "selected: " not in out
    out, _ = run("retention", "run", POLICY)
    assert "0 subjects selected" in out and "; no jobs; 0 rows erased" in out and "jobs by stage" not in out


@pytest.mark.parametrize("steps, lines", [
    (list(range(130, 1000, 130)) + [1000], 8),  # a running total that jumps: a line per 10% step crossed
    (list(range(5, 1001, 5)), 10),              # many small steps: one line per 10%
    ([1000], 1),
])
def test_progress_off_a_terminal_prints_each_ten_percent_step_crossed(steps, lines):
    from gestore_retention.management.base import RetentionCommand

    err = io.StringIO()
    command = RetentionCommand(stdout=io.StringIO(), stderr=err)
    for series in range(2):  # a second series (done starts again) prints again
        for done in steps:
            command.progress(done, 1000, "x")
    out = err.getvalue().splitlines()
    assert len(out) == 2 * lines and out[lines - 1] == out[-1] == "1000/1000 x", out


def test_retention_restore_brings_a_tenant_back_identical(env, demo):
    selected, _, _ = demo
    before = snapshot()
    run("retention", "run", POLICY)
    for org in selected:
        bundle = Bundle.objects.get(subject_pk=str(org.pk))
        out, _ = run("retention", "restore", bundle.id)
        assert f"restored demoapp.Organisation.{org.pk}" in out
        assert m.Organisation.objects.filter(pk=org.pk).exists()
    assert diff(before, snapshot()) == []
    assert AuditEvent.objects.filter(action="restore").count() == 2
    run("retention", "audit-verify")


def test_retention_restore_one_tenant_by_path_and_dry_run(env, demo):
    selected, _, _ = demo
    org = selected[0]
    before = snapshot()
    rows = tenant_rows([org])
    run("retention", "run", POLICY)
    erased = snapshot()
    path = Path(env) / "bundles" / Bundle.objects.get(subject_pk=str(org.pk)).name
    out, _ = run("retention", "restore", str(path), "--dry-run")
    assert "would restore" in out
    assert diff(erased, snapshot()) == []
    run("retention", "restore", str(path))
    after = snapshot()
    assert only(after, rows) == only(before, rows)
    # The Profiles whose current_org was SET_NULL point at it again.
    for pk, row in before["demoapp.Profile"].items():
        if row["current_org"] == org.pk:
            assert after["demoapp.Profile"][pk] == row


def test_retention_status_and_policies(env, demo):
    run("retention", "run", POLICY)
    out, _ = run("retention", "status")
    assert "recent runs:" in out and POLICY in out and "open jobs: 0" in out
    out, _ = run("retention", "policies")
    assert POLICY in out and "demoapp.Organisation" in out


# -- invariant 5: crash and resume ----------------------------------------------

class Crash(RuntimeError):
    """A simulated crash (not a RetentionError: nothing handles it)."""


def _crash_once(monkeypatch, target, name, when=lambda *a, **k: True):
    real = getattr(target, name)
    state = {"fired": False}

    def fake(*args, **kwargs):
        if not state["fired"] and when(*args, **kwargs):
            state["fired"] = True
            raise Crash(f"simulated crash in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)
    return state


def _arm(point, monkeypatch):
    import gestore_retention.erase as erase_mod
    import gestore_retention.pipeline as pipeline

    if point == "store":  # after the files were stored, before the Bundle row
        return _crash_once(monkeypatch, pipeline, "_record_bundle")
    if point == "verify":  # exported, crash during verification
        return _crash_once(monkeypatch, pipeline, "verify_restores")
    if point == "erase":  # verified, crash inside the deletion
        return _crash_once(monkeypatch, erase_mod.Collector, "delete")
    if point == "close":  # erased and committed, crash before closing the job
        return _crash_once(monkeypatch, sweep, "advance", when=lambda job, to, **kw: to == Job.CLOSED)
    raise AssertionError(point)


@pytest.mark.parametrize("point", ["store", "verify", "erase", "close"])
def test_a_crash_at_any_stage_is_completed_by_the_next_run(env, demo, monkeypatch, point):
    selected, held, others = demo
    before = snapshot()
    kept = tenant_rows(held + others)
    state = _arm(point, monkeypatch)
    with pytest.raises(Crash):
        run("retention", "run", POLICY)
    assert state["fired"]
    if point in ("store", "verify", "erase"):
        # Nothing of the crashed subject was deleted.
        assert m.Organisation.objects.filter(pk=selected[0].pk).exists()
    if point == "store":
        assert stored(env) == [] and not Bundle.objects.exists()
    monkeypatch.undo()
    run("retention", "run", POLICY)
    after = snapshot()
    for org in selected:
        assert not m.Organisation.objects.filter(pk=org.pk).exists()
        bundles = Bundle.objects.filter(subject_pk=str(org.pk), subject_label="demoapp.Organisation")
        assert len(bundles) == 1 and bundles[0].verified_at is not None, point
        for action in ("export", "verify", "erase"):
            assert AuditEvent.objects.filter(action=action, subject_pk=str(org.pk)).count() == 1, (point, action)
    assert len(stored(env)) == 2 * len(selected)
    assert only(after, kept) == only(before, kept)
    assert not Job.objects.filter(active_key__isnull=False).exists()
    assert Job.objects.filter(stage=Job.CLOSED).count() == len(selected)
    run("retention", "audit-verify")
    # And a third run does nothing.
    n_events = AuditEvent.objects.count()
    run("retention", "run", POLICY)
    assert diff(after, snapshot()) == [] and AuditEvent.objects.count() == n_events
    # What was erased comes back exactly.
    for org in selected:
        run("retention", "restore", Bundle.objects.get(subject_pk=str(org.pk)).id)
    assert diff(before, snapshot()) == []


# -- --help ----------------------------------------------------------------------

@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("name", GESTORE_COMMANDS)
def test_every_command_has_help(name):
    app = get_commands()[name]
    parser = load_command_class(app, name).create_parser("manage.py", name)
    text = parser.format_help()
    assert f"manage.py {name}" in text and len(text) > 200


@pytest.mark.django_db(transaction=False)
def test_help_through_manage_py():
    for name in GESTORE_COMMANDS + ("retention run", "retention restore", "bundle verify"):
        result = subprocess.run([sys.executable, "manage.py", *name.split(), "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout and "Traceback" not in result.stderr


def test_a_failed_verification_erases_nothing_and_the_next_run_completes(env, demo, monkeypatch):
    """A RetentionError (not a crash) fails the job; nothing is erased; the next run finishes."""
    import gestore_retention.pipeline as pipeline
    from gestore_retention.errors import VerificationFailed

    selected, _, _ = demo
    before = snapshot()
    real = pipeline.verify_restores
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise VerificationFailed("simulated mismatch")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "verify_restores", flaky)
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"1 job\(s\) failed"):  # a failed job: exit status 1
        call_command("retention", "run", POLICY, stdout=io.StringIO(), stderr=err)
    assert "simulated mismatch" in err.getvalue()
    first = selected[0]
    assert m.Organisation.objects.filter(pk=first.pk).exists()
    assert not AuditEvent.objects.filter(action="erase", subject_pk=str(first.pk)).exists()
    run("retention", "run", POLICY)
    for org in selected:
        assert not m.Organisation.objects.filter(pk=org.pk).exists()
        verified = Bundle.objects.filter(subject_pk=str(org.pk), verified_at__isnull=False)
        assert verified.count() == 1
        assert AuditEvent.objects.filter(action="erase", subject_pk=str(org.pk)).count() == 1
    # The failed job's unverified bundle stays (row and files) next to the verified one.
    assert Bundle.objects.filter(subject_pk=str(first.pk), verified_at__isnull=True).count() <= 1
    run("retention", "audit-verify")
    for org in selected:
        run("retention", "restore", Bundle.objects.get(subject_pk=str(org.pk), verified_at__isnull=False).id)
    assert diff(before, snapshot()) == []
