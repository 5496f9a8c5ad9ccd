"""Export on PostgreSQL, restore on SQLite and on MariaDB: the same values come back.

Each side runs in its own process with its own DATABASE_URL (a fresh, migrated
database), so the test needs both servers; it is skipped when one does not
answer, unless CI is set (then a missing server is a failure).
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/gestore_h6")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/gestore_h6")


def _server(url, suffix, drop_only=False):
    """Create a fresh database next to `url`'s; return its URL, or None if the server does not answer.

    With `drop_only`, drop the database `url` names (`suffix` "") and create nothing.
    """
    parts = urlsplit(url)
    # `make test` names each run's test database: runs sharing a server do not collide
    name = parts.path.lstrip("/") if drop_only else os.environ.get("GESTORE_TEST_DB_NAME", parts.path.lstrip("/")) + suffix
    try:
        if parts.scheme.startswith("postgres"):
            import psycopg

            with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                                 password=parts.password, dbname="postgres", connect_timeout=3,
                                 autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                if not drop_only:
                    conn.execute(f'CREATE DATABASE "{name}"')
        else:
            import pymysql

            conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                   password=parts.password or "", connect_timeout=3)
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                if not drop_only:
                    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            conn.close()
    except Exception:
        return None
    return parts._replace(path="/" + name).geturl()


def _child(step, url, path, tmp):
    env = dict(os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="tests.settings", GESTORE_VAR_DIR=str(tmp),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tests.test_restore_crossdb", step, str(path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(str(path) + "." + step + ".json").read_text())


def _need(url, what):
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} does not answer (CI is set)")
        pytest.skip(f"{what} does not answer")


@pytest.mark.parametrize("target", ["sqlite", "mysql"])
def test_export_on_postgresql_restore_elsewhere(target, tmp_path):
    pg = _server(PG_URL, "_xsrc")
    _need(pg, "PostgreSQL")
    if target == "sqlite":
        dst = f"sqlite:///{tmp_path / 'target.sqlite3'}"
    else:
        dst = _server(MYSQL_URL, "_xdst")
        _need(dst, "MariaDB/MySQL")
    bundle = tmp_path / "records"
    try:
        exported = _child("export", pg, bundle, tmp_path)
        restored = _child("restore", dst, bundle, tmp_path)
    finally:
        _server(pg, "", drop_only=True)
        if target != "sqlite":
            _server(dst, "", drop_only=True)
    models = {key.split()[0] for key in exported["rows"]}
    assert exported["owned"] >= 15 and len(models) >= 10, sorted(models)
    assert restored["rows"] == exported["rows"]


# -- the child processes ------------------------------------------------------------------
def _rows(records):
    """Owned records as {(model, pk): fields}, content types named by (app_label, model)."""
    from django.contrib.contenttypes.models import ContentType

    from gestore_retention.graph import relations

    out = {}
    for r in records:
        if r["role"] != "owned":
            continue
        model = relations.get_model(r["model"])
        fields = dict(r["fields"])
        for name, value in fields.items():
            f = model._meta.get_field(name)
            if f.is_relation and f.related_model is ContentType and value is not None:
                ct = ContentType.objects.get_for_id(value)
                fields[name] = f"{ct.app_label}.{ct.model}"
        out[f"{r['model']} {json.dumps(r['pk'])}"] = fields
    return out


def _export_subject():
    from demoapp import models as m
    from gestore_retention.graph.walk import Scope, walk
    from gestore_retention.records import Export

    org = m.Organisation.objects.get(slug="acme")
    plan = walk([org], scope=Scope.of(boundaries=["demoapp.Organisation"]))
    return json.loads(json.dumps(list(Export(plan).records())))


def _main(step, path):
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    path = Path(path)
    if step == "export":
        from tests.factories import tenant

        tenant("acme")
        tenant("other")
        records = _export_subject()
        path.write_text("\n".join(json.dumps(r) for r in records))
        rows = _rows(records)
        result = {"owned": len(rows), "rows": rows}
    else:
        from gestore_retention.restore import restore

        records = [json.loads(line) for line in path.read_text().splitlines()]
        restore(records)
        rows = _rows(_export_subject())
        result = {"owned": len(rows), "rows": rows}
    Path(str(path) + "." + step + ".json").write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
