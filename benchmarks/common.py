"""What every benchmark shares: child-process measurement, databases, tables.

Each measurement runs in its own process so its peak RSS is its own
(`os.wait4` gives the child's rusage). Figures are reported next to the peer
measured in the same run (dumpdata, loaddata, Django's delete(), raw
ChaCha20-Poly1305), since the machine is noisy: ratios, not absolutes.
"""
import datetime as dt
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PY = sys.executable

DATABASES = {
    "sqlite": None,  # a file under the benchmark's work dir
    "postgresql": os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/gestore_bench"),
}


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    stdout: str


class ChildFailed(RuntimeError):
    """A measured child process exited non-zero; `stderr` holds the end of its stderr."""

    def __init__(self, message, stderr=""):
        super().__init__(message)
        self.stderr = stderr

    def last_line(self):
        """Return the exception line of the child's stderr (else its last non-empty line).

        A database error's message may end with the statement and a "^"
        pointer under it: the line naming the exception says more.
        """
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        named = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
        return named[-1] if named else lines[-1] if lines else str(self)


class ChildTimeout(RuntimeError):
    """A measured child process ran past its timeout and was killed."""

    def __init__(self, seconds):
        super().__init__(f"killed after {seconds:.0f} s")
        self.seconds = seconds


def measure(argv, *, env=None, cwd=ROOT, timeout=None):
    """Run argv in a child process; return wall time, its own peak RSS and stdout.

    Raise ChildFailed (a RuntimeError) with the child's stderr when it fails,
    ChildTimeout when it runs longer than `timeout` seconds (it is killed).
    """
    import tempfile

    full_env = dict(os.environ, **(env or {}))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True)
        pause = 0.01
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # the child's own rusage
            if pid:
                break
            if timeout is not None and time.perf_counter() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise ChildTimeout(time.perf_counter() - start)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise ChildFailed(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{stderr[-4000:]}", stderr[-4000:])
    return Measurement(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024, stdout=stdout)


def report_peak():
    """Call at the end of a child process: prints its own peak RSS for measure()."""
    import resource

    print(f"PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)


def table(rows, headers):
    """Return rows (lists) as a Markdown table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def write_section(name, text):
    """Replace the section `name` of docs/benchmarks.md (between markers) with `text`."""
    DOC.parent.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nWritten by `make bench`; do not edit by hand.\n"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def postgres_available(url):
    try:
        import psycopg

        from urllib.parse import urlsplit

        parts = urlsplit(url)
        psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                        dbname="postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


# -- the demo subject ------------------------------------------------------------
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


@contextmanager
def counted(using="default"):
    """Count the queries run on `using` and time the block: yields {"queries": n, "seconds": s}."""
    from django.db import connections

    box = {"queries": 0}

    def wrapper(execute, sql, params, many, context):
        box["queries"] += 1
        return execute(sql, params, many, context)

    start = time.perf_counter()
    with connections[using].execute_wrapper(wrapper):
        yield box
    box["seconds"] = time.perf_counter() - start


def demo_rows():
    """Return {label: n} of the demo app's tables in the default database."""
    from django.apps import apps

    return {m._meta.label: m._base_manager.count() for m in apps.get_app_config("demoapp").get_models()
            if not m._meta.proxy and m._meta.concrete_model is m}


# -- databases -------------------------------------------------------------------
def _pg_admin(url, sql, dbname="postgres"):
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                         dbname=dbname, autocommit=True) as conn:
        conn.execute(sql)


class Database:
    """The databases of one benchmark, one vendor and one size.

    A template holds the demo subject of `rows` rows ("filled") or only the
    migrated schema ("empty"); `fresh(template)` makes a copy to measure on
    (an SQLite file copied, a PostgreSQL database created from the template).
    With `keep=True` templates stay between runs and modules (a stamp of
    `build()`'s source tells when they are stale); `drop()` removes them.
    """

    def __init__(self, bench, vendor, url, rows, keep=False):
        self.bench, self.vendor, self.url, self.rows, self.keep = bench, vendor, url, rows, keep
        self.root = ROOT / "var" / "bench" / bench
        self.dir = self.root / f"{vendor}-{rows}"

    def db_name(self, name):
        """Return the database name (PostgreSQL) or file stem (SQLite) of `name`."""
        return f"gestore_bench_{self.bench}_{name}"

    def template(self, kind):
        return self.db_name(f"{self.rows}" if kind == "filled" else "empty")

    def env(self, name):
        env = {
            "DJANGO_SETTINGS_MODULE": "demoapp.settings",
            "GESTORE_VAR_DIR": str(self.dir / "var"),
            "GESTORE_RETENTION_KEYS_DIR": str(self.dir / "var" / "keys"),
            "BENCH_ROWS": str(self.rows),
            "BENCH_DUMP": str(self.dir / "dump.json"),
            "BENCH_OUT": str(self.dir / "out"),
            "PYTHONPATH": str(ROOT),
        }
        if self.vendor == "sqlite":
            folder = self.root if name == self.template("empty") else self.dir
            env["DATABASE_URL"] = f"sqlite:///{folder / (name + '.sqlite3')}"
        else:
            env["DATABASE_URL"] = urlsplit(self.url)._replace(path=f"/{name}").geturl()
        return env

    def admin(self, sql):
        _pg_admin(self.url, sql)

    def _stamp_file(self, kind):
        folder = self.root if kind == "empty" else self.dir
        return folder / f".{self.vendor}-{kind}.stamp"

    def _stamp(self):
        """Hash what a template holds: `build()`'s source and every migration of the project's apps."""
        digest = hashlib.sha256(inspect.getsource(build).encode())
        for path in sorted(ROOT.glob("*/migrations/[0-9]*.py")):
            digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()[:16]

    def build(self, kind="filled"):
        """Build the template `kind` unless a kept one is current."""
        stamp = self._stamp_file(kind)
        if self.keep and stamp.exists() and stamp.read_text() == self._stamp():
            self.analyze(kind)
            return
        name = self.template(kind)
        if kind == "filled":
            shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "var").mkdir(parents=True, exist_ok=True)
        (self.dir / "out").mkdir(exist_ok=True)
        if self.vendor != "sqlite":
            self.admin(f'DROP DATABASE IF EXISTS "{name}"')
            self.admin(f'CREATE DATABASE "{name}"')
        else:
            Path(self.env(name)["DATABASE_URL"][len("sqlite:///"):]).unlink(missing_ok=True)
        measure([PY, "-m", "benchmarks.common", "build" if kind == "filled" else "migrate"], env=self.env(name))
        self.analyze(kind)
        stamp.write_text(self._stamp())

    def analyze(self, kind="filled"):
        """Give PostgreSQL's planner statistics of a freshly loaded template, as autovacuum would on a live site.

        Without them the planner guesses that `parent_id IN (...)` matches
        most rows and reads `... ORDER BY id LIMIT n` pages by the primary
        key index, filtering every row of the table (0.4 s a query at 1M rows,
        against 0.5 ms with statistics). Copies made from the template keep
        its statistics.
        """
        if self.vendor != "sqlite":
            _pg_admin(self.url, "ANALYZE", dbname=self.template(kind))

    def fresh(self, template="filled"):
        """Return the env of a fresh copy of the template."""
        shutil.rmtree(self.dir / "var" / "bundles", ignore_errors=True)
        shutil.rmtree(self.dir / "var" / "keys", ignore_errors=True)
        run = self.db_name("run")
        if self.vendor == "sqlite":
            source = self.env(self.template(template))["DATABASE_URL"][len("sqlite:///"):]
            for suffix in ("-journal", "-wal", "-shm"):  # a child killed mid-transaction leaves a hot journal
                (self.dir / f"{run}.sqlite3{suffix}").unlink(missing_ok=True)
            shutil.copy(source, self.dir / f"{run}.sqlite3")
        else:
            self.admin(f'DROP DATABASE IF EXISTS "{run}"')
            self.admin(f'CREATE DATABASE "{run}" TEMPLATE "{self.template(template)}"')
        return self.env(run)

    def drop(self):
        if self.vendor != "sqlite":
            self.admin(f'DROP DATABASE IF EXISTS "{self.db_name("run")}"')
            self.admin(f'DROP DATABASE IF EXISTS "{self.template("filled")}"')
        shutil.rmtree(self.dir, ignore_errors=True)


def run_child(module, mode, env, timeout=None, python=PY):
    """Run `python -m benchmarks.<module> <mode>`; return (its JSON result, peak RSS MB)."""
    m = measure([python, "-m", f"benchmarks.{module}", mode], env=env, timeout=timeout)
    return json.loads(m.stdout.strip().splitlines()[-1]), m.peak_rss_mb


def _child(mode):
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if mode == "build":
        build(int(os.environ["BENCH_ROWS"]))


if __name__ == "__main__":
    _child(sys.argv[1])
    print("{}")
