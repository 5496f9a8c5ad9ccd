"""Erase benchmark: guarded erase vs Django's own delete(), and the full
pipeline per subject, stage by stage, vs dumpdata plus delete().

Each figure comes from a fresh copy of the same database (an SQLite file
copied, or a PostgreSQL database created from a template), in a child
process, so peak RSS is the operation's own. Times are of the operation
only (Django's start-up excluded).

Run alone: `python -m benchmarks --only erase --sizes 10000,100000`.
"""
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .common import PY, ROOT, measure, table

NAME = "erase"
TITLE = "Erase: guarded erase vs delete(); pipeline vs dumpdata + delete()"
WORK = ROOT / "var" / "bench" / "erase"


# -- child side ---------------------------------------------------------------
def build(rows):
    """Fill an empty database with one organisation owning about `rows` rows."""
    from django.utils import timezone

    from demoapp import models as m

    now = timezone.now()
    org = m.Organisation.objects.create(
        name="bench", slug="bench", status="churned", created_at=now, churned_at=now - dt.timedelta(days=400)
    )
    projects = m.Project.objects.bulk_create(
        m.Project(org=org, name=f"p{i}", budget=i, starts_on=now.date(), estimate=dt.timedelta(hours=i))
        for i in range(10)
    )
    n_docs = max(1, rows // 10)
    docs = []
    for start in range(0, n_docs, 5000):
        docs += m.Document.objects.bulk_create(
            m.Document(project=projects[i % 10], title=f"d{i}", body="x" * 40, created_at=now)
            for i in range(start, min(n_docs, start + 5000))
        )
    n_comments = max(0, rows - n_docs - 11)
    for start in range(0, n_comments, 5000):
        m.Comment.objects.bulk_create(
            m.Comment(document=docs[i % len(docs)], body=f"comment {i} " + "y" * 60, created_at=now)
            for i in range(start, min(n_comments, start + 5000))
        )


def child(mode):
    import django

    django.setup()
    from django.core.management import call_command

    from demoapp.models import Organisation
    from gestore_retention.bundle import generate_keys
    from gestore_retention.graph.walk import Scope, walk
    from gestore_retention.records import Export

    if mode == "build":
        call_command("migrate", verbosity=0)
        build(int(os.environ["BENCH_ROWS"]))
        return {}
    org = Organisation.objects.get(slug="bench")
    scope = Scope.of(boundaries=["demoapp.Organisation"])
    timings = {}
    if mode == "delete":
        t = time.perf_counter()
        org.delete()
        timings["delete"] = time.perf_counter() - t
    elif mode == "erase":
        from gestore_retention.erase import erase

        plan = walk([org], scope=scope)
        exp = Export(plan)
        for _ in exp.records():
            pass
        t = time.perf_counter()
        erase(plan, expected_digest=exp.digest)
        timings["erase"] = time.perf_counter() - t
    elif mode == "pipeline":
        from gestore_retention.pipeline import erase_subject, export_bundle, verify_bundle

        generate_keys(os.environ["GESTORE_RETENTION_KEYS_DIR"])
        t = time.perf_counter()
        plan = walk([org], scope=scope)
        timings["walk"] = time.perf_counter() - t
        t = time.perf_counter()
        bundle = export_bundle(plan)
        timings["export+seal+store"] = time.perf_counter() - t
        t = time.perf_counter()
        verify_bundle(bundle, plan)
        timings["verify"] = time.perf_counter() - t
        t = time.perf_counter()
        erase_subject(bundle, scope=scope)
        timings["erase"] = time.perf_counter() - t
    elif mode == "dumpdata+delete":
        t = time.perf_counter()
        call_command("dumpdata", "demoapp", output=os.environ["BENCH_DUMP"], verbosity=0)
        timings["dumpdata"] = time.perf_counter() - t
        t = time.perf_counter()
        org.delete()
        timings["delete"] = time.perf_counter() - t
    return timings


# -- parent side --------------------------------------------------------------
class Database:
    """A template database of one size, copied fresh for every measurement."""

    def __init__(self, vendor, url, rows):
        self.vendor, self.url, self.rows = vendor, url, rows
        self.dir = WORK / f"{vendor}-{rows}"

    def env(self, name):
        env = {
            "DJANGO_SETTINGS_MODULE": "demoapp.settings",
            "GESTORE_VAR_DIR": str(self.dir / "var"),
            "GESTORE_RETENTION_KEYS_DIR": str(self.dir / "var" / "keys"),
            "BENCH_ROWS": str(self.rows),
            "BENCH_DUMP": str(self.dir / "dump.json"),
            "PYTHONPATH": str(ROOT),
        }
        if self.vendor == "sqlite":
            env["DATABASE_URL"] = f"sqlite:///{self.dir / (name + '.sqlite3')}"
        else:
            parts = urlsplit(self.url)
            env["DATABASE_URL"] = parts._replace(path=f"/{name}").geturl()
        return env

    def admin(self, sql):
        import psycopg

        parts = urlsplit(self.url)
        with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def template_name(self):
        return f"gestore_bench_erase_{self.rows}"

    def build(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "var").mkdir(parents=True)
        if self.vendor != "sqlite":
            self.admin(f'DROP DATABASE IF EXISTS "{self.template_name()}"')
            self.admin(f'CREATE DATABASE "{self.template_name()}"')
        run_child("build", self.env(self.template_name()))

    def fresh(self):
        """Return the env of a fresh copy of the template."""
        shutil.rmtree(self.dir / "var" / "bundles", ignore_errors=True)
        shutil.rmtree(self.dir / "var" / "keys", ignore_errors=True)
        if self.vendor == "sqlite":
            shutil.copy(self.dir / f"{self.template_name()}.sqlite3", self.dir / "run.sqlite3")
        else:
            self.admin('DROP DATABASE IF EXISTS "gestore_bench_erase_run"')
            self.admin(f'CREATE DATABASE "gestore_bench_erase_run" TEMPLATE "{self.template_name()}"')
        return self.env("gestore_bench_erase_run" if self.vendor != "sqlite" else "run")

    def drop(self):
        if self.vendor != "sqlite":
            self.admin('DROP DATABASE IF EXISTS "gestore_bench_erase_run"')
            self.admin(f'DROP DATABASE IF EXISTS "{self.template_name()}"')
        shutil.rmtree(self.dir, ignore_errors=True)


def run_child(mode, env):
    m = measure([PY, "-m", "benchmarks.erase", mode], env=env)
    timings = json.loads(m.stdout.strip().splitlines()[-1])
    return timings, m.peak_rss_mb


def run(sizes, databases):
    rows_out, notes = [], []
    for vendor, url in databases.items():
        for rows in sizes:
            if rows > 100_000:
                notes.append(f"{vendor} {rows:,} rows: skipped (Django's Collector holds every instance in memory; "
                             "the erase batching of issue 6 is not built yet)")
                continue
            db = Database(vendor, url, rows)
            db.build()
            try:
                delete, delete_rss = run_child("delete", db.fresh())
                erase, erase_rss = run_child("erase", db.fresh())
                pipe, pipe_rss = run_child("pipeline", db.fresh())
                peer, peer_rss = run_child("dumpdata+delete", db.fresh())
            finally:
                db.drop()
            pipeline_total = sum(pipe.values())
            peer_total = sum(peer.values())
            rows_out.append([
                vendor, f"{rows:,}", f"{delete['delete']:.2f}", f"{erase['erase']:.2f}",
                f"{erase['erase'] / delete['delete']:.2f}x",
                " / ".join(f"{k} {v:.2f}" for k, v in pipe.items()), f"{pipeline_total:.2f}",
                f"{peer['dumpdata']:.2f} + {peer['delete']:.2f}", f"{pipeline_total / peer_total:.2f}x",
                f"{delete_rss:.0f} / {erase_rss:.0f} / {pipe_rss:.0f}",
            ])
    text = table(rows_out, [
        "db", "rows", "delete() s", "guarded erase s", "erase/delete (target <= 1.3x)",
        "pipeline stages s", "pipeline s", "dumpdata + delete() s", "pipeline/peer (target <= 1.5x)",
        "peak RSS MB delete / erase / pipeline",
    ])
    return text + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")


if __name__ == "__main__":
    result = child(sys.argv[1])
    print(json.dumps(result))
