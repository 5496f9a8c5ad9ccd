"""Invariant 7: bad input gets one clear error, a non-zero exit, and nothing written.

Every case runs the real command (call_command) and checks three things: a
CommandError whose message names what is wrong and where; every table equal
to before (tests.snapshot), the gestore_retention tables included; no new
file in the bundle storage or the media storage. A second set runs
`manage.py` in a subprocess (SQLite only) for the exit code and the absence
of a traceback.
"""
import io
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from demoapp import models as m
from gestore_retention.bundle import KeyRing, generate_keys, seal
from gestore_retention.graph.walk import walk
from gestore_retention.models import AuditEvent, Bundle, Job, LegalHold, Run
from gestore_retention.pipeline import FORMAT
from gestore_retention.records import Export, schema
from tests.factories import tenant
from tests.snapshot import diff, snapshot

ROOT = Path(__file__).resolve().parent.parent
APPS = ("demoapp", "auth", "contenttypes", "gestore_retention")

BAD_SPECS = [
    ("foo", "'foo': expected <app_label>.<Model>.<pk>"),
    ("demoapp.Organisation", "'demoapp.Organisation': expected <app_label>.<Model>.<pk>"),
    ("demoapp..1", "'demoapp..1': expected <app_label>.<Model>.<pk>"),
    ("", "'': expected <app_label>.<Model>.<pk>"),
    ("nope.Organisation.1", "unknown model nope.Organisation"),
    ("demoapp.Nope.1", "unknown model demoapp.Nope"),
    ("demoapp.Organisation.abc", "'abc' is not a valid primary key for demoapp.Organisation"),
    ("demoapp.Invoice.not-a-uuid", "'not-a-uuid' is not a valid primary key for demoapp.Invoice"),
    ("demoapp.Organisation.999999", "demoapp.Organisation has no object with pk 999999"),
    ("demoapp.Currency.ZZZ", "demoapp.Currency has no object with pk 'ZZZ'"),
    ("demoapp.Organisation. 2", "(an integer, written in ASCII digits)"),
    ("demoapp.Organisation.\uff12", "(an integer, written in ASCII digits)"),
]


def run(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def files(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


class World:
    """The state that must not change: every table and every stored file."""

    def __init__(self, env):
        self.env = Path(env)

    def take(self):
        return (snapshot(app_labels=APPS), files(self.env / "bundles"), files(self.env / "media"),
                AuditEvent.objects.count())

    def freeze(self):
        self.before = self.take()

    def assert_unchanged(self):
        after = self.take()
        assert diff(self.before[0], after[0]) == []
        assert after[1:] == self.before[1:]


def refuses(world, *args, match, **options):
    """Run a command that must fail with `match` in its message and change nothing."""
    world.freeze()
    with pytest.raises(CommandError) as exc:
        run(*args, **options)
    message = str(exc.value)
    for fragment in [match] if isinstance(match, str) else match:
        assert fragment in message, message
    assert "\n" not in message.strip(), f"one line, please: {message!r}"
    world.assert_unchanged()
    return message


@pytest.fixture
def world(retention_env):
    acme = tenant("acme", files=True)
    tenant("other")
    w = World(retention_env)
    w.acme = acme
    return w


# -- object specs ---------------------------------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("command", ["exportobjects", "deleteobjects"])
@pytest.mark.parametrize("spec, message", BAD_SPECS, ids=[s or "empty" for s, _ in BAD_SPECS])
def test_bad_object_spec(world, command, spec, message):
    refuses(world, command, spec, match=message)


@pytest.mark.parametrize("option", ["--plan", "--debug", "--dry-run"])
def test_bad_object_spec_with_read_only_options(world, option):
    command = "deleteobjects" if option == "--dry-run" else "exportobjects"
    refuses(world, command, "demoapp.Nope.1", option, match="unknown model demoapp.Nope")


def test_one_bad_spec_among_good_ones_exports_nothing(world):
    refuses(world, "exportobjects", f"demoapp.Organisation.{world.acme.pk}", "demoapp.Organisation.x",
            match="'x' is not a valid primary key")
    refuses(world, "exportobjects", f"demoapp.Organisation.{world.acme.pk}", "demoapp.Organisation.999999",
            match="999999")
    refuses(world, "deleteobjects", f"demoapp.Organisation.{world.acme.pk}", "demoapp.Organisation.x",
            match="'x' is not a valid primary key")


def test_one_missing_object_among_good_ones_deletes_nothing(world):
    refuses(world, "deleteobjects", f"demoapp.Organisation.{world.acme.pk}", "demoapp.Organisation.999999",
            match="999999")


def test_one_blocked_object_among_good_ones_deletes_nothing(world):
    # The currency is PROTECTed by the organisation's invoices: checked before the first erase.
    refuses(world, "deleteobjects", f"demoapp.Organisation.{world.acme.pk}", "demoapp.Currency.EUR",
            match=["demoapp.Invoice.currency", "PROTECT"])


def test_a_pk_too_large_for_the_column(world):
    # 2**70 overflows a bigint on every backend: a clear error, not a database traceback.
    refuses(world, "exportobjects", f"demoapp.Organisation.{2 ** 70}", match=str(2 ** 70))


@pytest.mark.parametrize("where, message", [
    ("existing", "a file exists there; a bundle is never overwritten"),
    ("signature", "a file exists there"),
    ("directory", "a directory exists there"),
    ("missing-dir", "does not exist"),
    ("storage", "inside the retention storage"),
])
def test_export_output_must_be_a_new_file_outside_the_storage(world, where, message, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = {
        "existing": out / "x.age", "signature": out / "y.age", "directory": out,
        "missing-dir": out / "nope" / "x.age", "storage": Path(world.env) / "bundles" / "x.age",
    }[where]
    (out / "x.age").write_bytes(b"an archive")
    (out / "y.age.minisig").write_bytes(b"a signature")
    (Path(world.env) / "bundles").mkdir(exist_ok=True)
    refuses(world, "exportobjects", f"demoapp.Organisation.{world.acme.pk}", "-o", str(path), match=message)
    assert (out / "x.age").read_bytes() == b"an archive" and sorted(p.name for p in out.iterdir()) == [
        "x.age", "y.age.minisig"]


# -- missing keys -------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("exportobjects", "{spec}"),
    ("exportobjects", "{spec}", "-o", "{tmp}/out.age"),
    ("deleteobjects", "{spec}"),
])
def test_missing_key_directory(world, settings, tmp_path, args):
    nowhere = tmp_path / "no-such-keys"
    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, KEYS_DIR=str(nowhere))
    args = [a.format(spec=f"demoapp.Organisation.{world.acme.pk}", tmp=tmp_path) for a in args]
    refuses(world, *args, match=str(nowhere))
    assert not (tmp_path / "out.age").exists() and not (tmp_path / "out.age.minisig").exists()
    assert m.Organisation.objects.filter(pk=world.acme.pk).exists()


def test_no_key_directory_configured(world, settings, monkeypatch):
    monkeypatch.delenv("GESTORE_RETENTION_KEYS_DIR", raising=False)
    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, KEYS_DIR=None)
    refuses(world, "exportobjects", f"demoapp.Organisation.{world.acme.pk}", match="KEYS_DIR")


# -- importobjects of bad bundles ------------------------------------------------------

@pytest.fixture
def bundles(world, settings, tmp_path):
    """A good bundle of acme (acme then erased), plus bad ones. Returns {name: path}."""
    paths = {}
    good = tmp_path / "good.age"
    run("exportobjects", f"demoapp.Organisation.{world.acme.pk}", "-o", str(good))
    paths["good"] = good
    # Another key ring signs (and encrypts) a bundle of the same subject.
    keys = dict(settings.GESTORE_RETENTION)
    generate_keys(tmp_path / "other-keys")
    settings.GESTORE_RETENTION = dict(keys, KEYS_DIR=str(tmp_path / "other-keys"))
    foreign = tmp_path / "foreign.age"
    run("exportobjects", f"demoapp.Organisation.{world.acme.pk}", "-o", str(foreign))
    settings.GESTORE_RETENTION = keys
    paths["foreign"] = foreign
    # Our key ring's signature on another ring's bundle: our signature over foreign bytes.
    paths["records"] = list(Export(walk([world.acme])).records())
    run("deleteobjects", f"demoapp.Organisation.{world.acme.pk}")
    return paths


def _copy(src, dst, data=None, sig=True):
    dst.write_bytes(src.read_bytes() if data is None else data)
    if sig:
        Path(str(dst) + ".minisig").write_bytes(Path(str(src) + ".minisig").read_bytes())
    return dst


def test_the_good_bundle_restores(world, bundles):
    # The control: the bad bundles below fail because they are bad.
    # acme was erased (by deleteobjects) after this bundle was made: restoring it needs saying so.
    refuses(world, "importobjects", str(bundles["good"]), match="--allow-erased")
    run("importobjects", str(bundles["good"]), "--debug", "--allow-erased")
    run("importobjects", str(bundles["good"]), "--allow-erased")
    assert m.Organisation.objects.filter(slug="acme").exists()


def test_import_a_path_that_does_not_exist(world, bundles, tmp_path):
    missing = tmp_path / "nope.age"
    refuses(world, "importobjects", str(missing), match=str(missing))
    refuses(world, "importobjects", "no-such-bundle-id", match="no-such-bundle-id")
    refuses(world, "retention", "restore", str(missing), match=str(missing))


@pytest.mark.parametrize("where", ["start", "header", "middle", "end"])
def test_import_a_corrupt_bundle(world, bundles, tmp_path, where):
    data = bytearray(bundles["good"].read_bytes())
    index = {"start": 0, "header": 40, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[index] ^= 0x01
    bad = _copy(bundles["good"], tmp_path / "corrupt.age", bytes(data))
    refuses(world, "importobjects", str(bad), match="corrupt.age")
    refuses(world, "importobjects", str(bad), "--override", match="corrupt.age")


@pytest.mark.parametrize("keep", [0, 20, 200, "half", -1])
def test_import_a_truncated_bundle(world, bundles, tmp_path, keep):
    data = bundles["good"].read_bytes()
    n = len(data) // 2 if keep == "half" else (len(data) - 1 if keep == -1 else keep)
    bad = _copy(bundles["good"], tmp_path / "truncated.age", data[:n])
    refuses(world, "importobjects", str(bad), match="truncated.age")


def test_import_a_bundle_without_its_signature(world, bundles, tmp_path):
    bad = _copy(bundles["good"], tmp_path / "unsigned.age", sig=False)
    refuses(world, "importobjects", str(bad), match="unsigned.age")


def test_import_a_bundle_with_a_corrupt_or_empty_signature(world, bundles, tmp_path):
    bad = _copy(bundles["good"], tmp_path / "badsig.age")
    sig = Path(str(bad) + ".minisig")
    text = bytearray(sig.read_bytes())
    text[len(text) // 2] ^= 0x02
    sig.write_bytes(bytes(text))
    refuses(world, "importobjects", str(bad), match="badsig.age")
    sig.write_bytes(b"")
    refuses(world, "importobjects", str(bad), match="badsig.age")


def test_import_a_bundle_signed_by_another_key_ring(world, bundles):
    refuses(world, "importobjects", str(bundles["foreign"]), match="foreign.age")


def test_import_a_bundle_with_another_bundles_signature(world, bundles, tmp_path):
    # Each file valid on its own; the pair does not match.
    good, foreign = bundles["good"], bundles["foreign"]
    bad = tmp_path / "swapped.age"
    bad.write_bytes(good.read_bytes())
    other = tmp_path / "other.age"
    run("exportobjects", f"demoapp.Organisation.{m.Organisation.objects.get(slug='other').pk}", "-o", str(other))
    Path(str(bad) + ".minisig").write_bytes(Path(str(other) + ".minisig").read_bytes())
    refuses(world, "importobjects", str(bad), match="swapped.age")
    assert foreign.exists()


def _signed(path, records, metadata=None):
    """Seal `records` with our own key ring: signature and encryption are valid."""
    keyring = KeyRing.from_settings()
    metadata = metadata or {"format": FORMAT, "bundle_id": path.name, "subject": "demoapp.Organisation.1",
                            "subjects": ["demoapp.Organisation.1"], "policy": "", "policy_hash": "",
                            "created_at": "2026-01-01T00:00:00+00:00", "schema": {}}
    with open(path, "wb") as fh:
        signature, _ = seal(fh, metadata, records, keyring)
    Path(str(path) + ".minisig").write_bytes(signature)
    return path


def test_import_a_signed_bundle_with_an_unknown_model(world, bundles, tmp_path):
    records = bundles["records"] + [{"model": "demoapp.nope", "pk": 1, "fields": {}, "role": "owned"}]
    bad = _signed(tmp_path / "unknown-model.age", records)
    refuses(world, "importobjects", str(bad), match="demoapp.nope")


def test_import_a_signed_bundle_with_an_unknown_field(world, bundles, tmp_path):
    records = [dict(r) for r in bundles["records"]]
    last = max(i for i, r in enumerate(records) if r["role"] == "owned")
    records[last] = dict(records[last], fields=dict(records[last]["fields"], no_such_field=1))
    bad = _signed(tmp_path / "unknown-field.age", records)
    refuses(world, "importobjects", str(bad), match="no_such_field")


def test_import_a_signed_bundle_whose_last_row_fails_is_all_or_nothing(world, bundles, tmp_path):
    # Every row is fine except the last one, which conflicts with itself (a duplicate pk).
    records = list(bundles["records"])
    owned = [r for r in records if r["role"] == "owned"]
    records.append(dict(owned[-1]))
    bad = _signed(tmp_path / "duplicate.age", records)
    label = owned[-1]["model"]
    message = refuses(world, "importobjects", str(bad), match="already exist")
    assert label in message.lower(), message
    assert not m.Organisation.objects.filter(slug="acme").exists()


def test_import_a_signed_bundle_from_another_schema_is_refused(world, bundles, tmp_path):
    labels = {r["model"] for r in bundles["records"]}
    real = schema(labels)
    real["demoapp.organisation"] = "0" * 16  # the organisation table had other columns
    metadata = {"format": FORMAT, "bundle_id": "old-schema", "subject": f"demoapp.Organisation.{world.acme.pk}",
                "subjects": [f"demoapp.Organisation.{world.acme.pk}"], "policy": "", "policy_hash": "",
                "created_at": "2026-01-01T00:00:00+00:00", "schema": real}
    bad = _signed(tmp_path / "old-schema.age", bundles["records"], metadata)
    refuses(world, "importobjects", str(bad), match=["schema", "demoapp.organisation"])


def test_import_a_plain_file_and_a_directory(world, bundles, tmp_path):
    plain = tmp_path / "plain.age"
    plain.write_bytes(zlib.compress(b'{"model": "demoapp.organisation"}\n'))
    Path(str(plain) + ".minisig").write_bytes(b"not a signature\n")
    refuses(world, "importobjects", str(plain), match="plain.age")
    refuses(world, "importobjects", str(tmp_path), match=str(tmp_path))


@pytest.mark.parametrize("command", [["importobjects"], ["bundle", "verify"], ["bundle", "inspect"], ["bundle", "rewrap"]])
def test_a_bundle_path_that_is_no_regular_file(world, tmp_path, command):
    # A directory (an empty last component included) or a device, never "does not exist" or a traceback.
    for path in [".", "/", str(tmp_path), f"{tmp_path}/"]:
        refuses(world, *command, path, match=f"{path.rstrip('/') or '/'} is a directory, not a bundle file")
    refuses(world, *command, os.devnull, match=f"{os.devnull} is not a regular file")
    refuses(world, *command, "", match="argument PATH: must not be empty")


# -- options that exclude one another ---------------------------------------------

@pytest.mark.parametrize("options, message", [
    (["--debug", "-o", "x.age"], "--output and --debug cannot be combined"),
    (["--plan", "-o", "x.age"], "--output and --plan cannot be combined"),
    (["--plan", "--debug"], "--debug and --plan cannot be combined"),
    (["--plan", "--explain", "demoapp.Organisation.1"], "--plan and --explain cannot be combined"),
    (["--explain", "demoapp.Organisation.1", "-o", "x.age"], "--output and --explain cannot be combined"),
    (["-o", ""], "argument -o/--output: must not be empty"),
], ids=["debug-output", "plan-output", "plan-debug", "plan-explain", "explain-output", "empty-output"])
def test_exportobjects_conflicting_options(world, tmp_path, options, message):
    options = [str(tmp_path / o) if o == "x.age" else o for o in options]
    refuses(world, "exportobjects", f"demoapp.Organisation.{world.acme.pk}", *options, match=message)


@pytest.mark.parametrize("options, message", [
    (["--revoke", "ABCD", "--destroy-epoch", "1"], "--revoke and --destroy-epoch cannot be combined"),
    (["--revoke", "ABCD", "--epoch", "2"], "--revoke and --epoch cannot be combined"),
    (["--destroy-epoch", "1", "--escrow", "age1x"], "--destroy-epoch and --escrow cannot be combined"),
    (["--reason", "lost"], "--reason goes with --revoke"),
    (["--epoch", "0"], "argument --epoch: '0' is not a positive integer"),
    (["--epoch", "-1"], "argument --epoch: '-1' is not a positive integer"),
    (["--destroy-epoch", "0"], "argument --destroy-epoch: '0' is not a positive integer"),
], ids=["revoke-destroy", "revoke-epoch", "destroy-escrow", "reason-alone", "epoch-0", "epoch-negative", "destroy-0"])
def test_keygen_conflicting_or_bad_options(world, settings, options, message):
    keys = Path(settings.GESTORE_RETENTION["KEYS_DIR"])
    before = sorted((p.name, p.read_bytes()) for p in keys.iterdir())
    refuses(world, "retention", "keygen", *options, match=message)
    assert sorted((p.name, p.read_bytes()) for p in keys.iterdir()) == before


@pytest.mark.parametrize("head", ["zzzz", "abc", "g" * 16, " "])
def test_audit_verify_with_a_malformed_known_head_is_an_input_error(world, head):
    message = refuses(world, "retention", "audit-verify", "--known-head", head, match="--known-head")
    assert "BROKEN" not in message
    assert "16 hex digits" in message or "must not be empty" in message


def test_gendemo_with_an_unknown_database_alias(world):
    refuses(world, "gendemo", "--database", "nope", match="--database nope: no such database alias")


# -- policies -----------------------------------------------------------------------

BAD_POLICIES = {
    "unknown-key": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                    'select = { status = "churned" }\naction = "archive"\nselectt = 1\n', 'key "selectt"'),
    "unknown-field": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                      'select = { churnedd_at__lt = "-90d" }\naction = "archive"\n', 'key "select.churnedd_at__lt"'),
    "unknown-model": ('name = "x"\nsubject = "demoapp.Nope"\nschedule = "0 3 * * *"\n'
                      'select = { status = "churned" }\naction = "archive"\n', 'key "subject"'),
    "bad-schedule": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "61 3 * * *"\n'
                     'select = { status = "churned" }\naction = "archive"\n', 'key "schedule"'),
    "bad-action": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                   'select = { status = "churned" }\naction = "erase-everything"\n', 'key "action"'),
    "missing-select": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                       'action = "archive"\n', 'key "select"'),
    "bad-duration": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                     'select = { status = "churned" }\naction = "archive"\n[bundle]\nkeep_for = "3m"\n',
                     'key "bundle.keep_for"'),
    "bad-storage": ('name = "x"\nsubject = "demoapp.Organisation"\nschedule = "0 3 * * *"\n'
                    'select = { status = "churned" }\naction = "archive"\n[bundle]\nstorage = "nope"\n',
                    'key "bundle.storage"'),
    "not-toml": ('name = "x\n', "invalid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_retention_run_with_an_invalid_policy_file(world, tmp_path, case, dry_run):
    text, key = BAD_POLICIES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    args = ["retention", "run", str(path)] + (["--dry-run"] if dry_run else [])
    message = refuses(world, *args, match=[f"{case}.toml", key])
    assert not Run.objects.exists() and not Job.objects.exists(), message


def test_retention_run_with_an_unknown_policy_name(world):
    refuses(world, "retention", "run", "no-such-policy", match=['unknown policy "no-such-policy"', "churned-tenants"])
    refuses(world, "retention", "run", "no-such-policy", "--dry-run", match='unknown policy "no-such-policy"')


def test_retention_run_with_a_policy_file_that_does_not_exist(world, tmp_path):
    missing = tmp_path / "missing.toml"
    refuses(world, "retention", "run", str(missing), match="missing.toml")


def test_retention_restore_of_an_unknown_bundle_id(world):
    refuses(world, "retention", "restore", "0123456789abcdef", match="0123456789abcdef")


def test_retention_with_an_invalid_policy_in_policy_dirs(world, settings, tmp_path):
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "broken.toml").write_text(BAD_POLICIES["unknown-key"][0])
    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, POLICY_DIRS=[str(tmp_path / "pol")])
    refuses(world, "retention", "run", match=["broken.toml", 'key "selectt"'])
    refuses(world, "retention", "policies", match=["broken.toml", 'key "selectt"'])


# -- the real manage.py: exit status and no traceback (SQLite only) ------------------

def _clean_env(var_dir, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "GESTORE_RETENTION_KEYS_DIR", "GESTORE_TEST_DB_NAME",
                        "DJANGO_SETTINGS_MODULE")}
    env.update(GESTORE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def _manage(var_dir, *args, env=None, check=False):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env or _clean_env(var_dir))
    if check and result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _db_state(var_dir):
    con = sqlite3.connect(var_dir / "demo.sqlite3")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()


def _var_files(var_dir):
    return sorted(str(p.relative_to(var_dir)) for p in var_dir.rglob("*")
                  if p.is_file() and not p.name.startswith("demo.sqlite3"))


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory):
    if not os.environ.get("DATABASE_URL", "sqlite://").startswith("sqlite"):  # testmatrix's SQLite run sets sqlite://
        pytest.skip("the manage.py subprocess tests run on SQLite")
    var = tmp_path_factory.mktemp("var")
    _manage(var, "migrate", "--verbosity", "0", check=True)
    _manage(var, "retention", "keygen", check=True)
    _manage(var, "gendemo", "--tenants", "3", "--seed", "1", check=True)
    _manage(var, "exportobjects", "demoapp.Organisation.1", "-o", str(var / "good.age"), check=True)
    data = bytearray((var / "good.age").read_bytes())
    data[len(data) // 2] ^= 0x01
    (var / "corrupt.age").write_bytes(bytes(data))
    (var / "corrupt.age.minisig").write_bytes((var / "good.age.minisig").read_bytes())
    (var / "bad.toml").write_text(BAD_POLICIES["unknown-key"][0])
    return var


SUBPROCESS_CASES = {
    "exportobjects-spec": (["exportobjects", "foo"], {}, "'foo': expected <app_label>.<Model>.<pk>"),
    "exportobjects-model": (["exportobjects", "demoapp.Nope.1"], {}, "unknown model demoapp.Nope"),
    "exportobjects-missing": (["exportobjects", "demoapp.Organisation.999"], {}, "no object with pk 999"),
    "exportobjects-keys": (["exportobjects", "demoapp.Organisation.1"],
                           {"GESTORE_RETENTION_KEYS_DIR": "/nonexistent/keys"}, "/nonexistent/keys"),
    "deleteobjects-pk": (["deleteobjects", "demoapp.Organisation.abc"], {}, "'abc' is not a valid primary key"),
    "deleteobjects-keys": (["deleteobjects", "demoapp.Organisation.2"],
                           {"GESTORE_RETENTION_KEYS_DIR": "/nonexistent/keys"}, "/nonexistent/keys"),
    "deleteobjects-blocked": (["deleteobjects", "demoapp.Currency.EUR"], {}, "demoapp.Invoice.currency"),
    # The demo's organisation 1 is under a legal hold.
    "deleteobjects-held": (["deleteobjects", "demoapp.Organisation.1"], {}, "a legal hold forbids this erasure"),
    "deleteobjects-held-dry-run": (["deleteobjects", "demoapp.Organisation.1", "--dry-run"], {}, "legal hold"),
    "deleteobjects-contenttype": (["deleteobjects", "contenttypes.ContentType.1"], {}, "a restore never writes"),
    "deleteobjects-own-model": (["deleteobjects", "gestore_retention.LegalHold.1"], {}, "a restore never writes"),
    "importobjects-missing": (["importobjects", "/nonexistent/x.age"], {}, "/nonexistent/x.age"),
    "importobjects-corrupt": (["importobjects", "{var}/corrupt.age"], {}, "corrupt.age"),
    "importobjects-conflict": (["importobjects", "{var}/good.age"], {}, "demoapp"),
    "retention-policy-file": (["retention", "run", "{var}/bad.toml"], {}, 'key "selectt"'),
    "retention-policy-name": (["retention", "run", "nope"], {}, 'unknown policy "nope"'),
    "retention-restore": (["retention", "restore", "/nonexistent/x.age"], {}, "/nonexistent/x.age"),
    "retention-run-keys": (["retention", "run", "churned-tenants"],
                           {"GESTORE_RETENTION_KEYS_DIR": "/nonexistent/keys"}, "/nonexistent/keys"),
    "bundle-verify": (["bundle", "verify", "{var}/corrupt.age"], {}, "corrupt.age"),
    "bundle-usage": (["bundle"], {}, "the following arguments are required: SUBCOMMAND"),
    "retention-usage": (["retention", "frobnicate"], {}, "invalid choice"),
    "database-alias": (["exportobjects", "--database", "nope", "demoapp.Organisation.2"], {},
                       "--database nope: no such database alias"),
    "database-alias-subcommand": (["retention", "status", "--database", "nope"], {}, "no such database alias"),
    "keygen-file": (["keygen-in-a-file"], {}, "cannot create it"),
    "gendemo-database": (["gendemo", "--database", "nope"], {}, "--database nope: no such database alias"),
    "importobjects-dot": (["importobjects", "."], {}, ". is a directory, not a bundle file"),
    "bundle-verify-root": (["bundle", "verify", "/"], {}, "/ is a directory, not a bundle file"),
    # Usage errors: one line `manage.py <command>: error: ...` (exit 2), no usage block.
    "usage-batch-rows": (["deleteobjects", "X", "--batch-rows", "0"], {}, "--batch-rows: '0' is not a positive"),
    "usage-mode": (["retention", "restore", "x", "--mode", "bogus"], {}, "invalid choice: 'bogus'"),
    "usage-positional": (["deleteobjects"], {}, "the following arguments are required: OBJECT"),
    "usage-gendemo": (["gendemo", "--tenants", "0"], {}, "argument --tenants"),
}


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_manage_py_exits_non_zero_without_a_traceback(var_dir, case):
    args, extra_env, message = SUBPROCESS_CASES[case]
    args = [a.format(var=var_dir) for a in args]
    if args == ["keygen-in-a-file"]:
        args = ["retention", "keygen", "--dir", str(Path(var_dir) / "good.age")]  # a file, not a directory
    before, before_files = _db_state(var_dir), _var_files(var_dir)
    result = _manage(var_dir, *args, env=_clean_env(var_dir, **extra_env))
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("CommandError") or line.startswith("manage.py ") and ": error: " in line]
    assert len(errors) == 1, result.stderr
    assert _db_state(var_dir) == before
    assert _var_files(var_dir) == before_files
    if result.returncode == 2:  # argparse: the error line is all there is
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("manage.py "), result.stderr


def test_manage_py_help_still_prints_the_usage(var_dir):
    result = _manage(var_dir, "retention", "restore", "--help", check=True)
    assert result.stdout.startswith("usage: manage.py retention restore") and "--mode" in result.stdout
