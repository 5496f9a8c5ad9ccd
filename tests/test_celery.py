"""A real Celery worker against Redis runs the churned-tenants policy.

Everything happens in subprocesses that share one database: a temporary
SQLite file under GESTORE_VAR_DIR, or, when DATABASE_URL is set, a database
of its own created on that server for the test and dropped afterwards. The
worker and the client use a settings module written to tmp_path that imports
the demo settings and gives this test a queue of its own, so runs sharing the
Redis database (other suites, other workers) never take each other's tasks.

Redis: CELERY_TEST_BROKER (default redis://127.0.0.1:6379/15). When it does
not answer, the tests skip, except under CI=true where they fail.
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICY = "churned-tenants"
BROKER = os.environ.get("CELERY_TEST_BROKER") or "redis://127.0.0.1:6379/15"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
TIMEOUT = 90  # a ceiling for slow, shared machines; a run takes ~10 s

pytestmark = pytest.mark.celery

SETTINGS = """\
from demoapp.settings import *  # noqa: F401,F403

CELERY_TASK_DEFAULT_QUEUE = {queue!r}
CELERY_BROKER_URL = {broker!r}
CELERY_RESULT_BACKEND = {broker!r}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_TRANSPORT_OPTIONS = {{"visibility_timeout": 3600}}
"""

# A small control script for the shared database: `state` prints what the
# assertions need as JSON; the other verbs queue tasks like a client would.
CTL = """\
import json
import sys

import django

django.setup()

from django.utils import timezone

from demoapp.models import Organisation
from gestore_retention import audit, sweep, tasks
from gestore_retention.models import AuditEvent, Bundle, Job, LegalHold, Run
from gestore_retention.policy import get_policy

verb, args = sys.argv[1], sys.argv[2:]
if verb == "state":
    policy = get_policy("churned-tenants")
    print(json.dumps({
        "orgs": {str(pk): status for pk, status in Organisation.objects.values_list("pk", "status")},
        "selected": [str(pk) for pk in policy.queryset(now=timezone.now()).values_list("pk", flat=True)],
        "held": sorted(LegalHold.objects.filter(released_at__isnull=True).values_list("subject_pk", flat=True)),
        "bundles": [[b.subject_pk, b.verified_at is not None, b.name]
                    for b in Bundle.objects.order_by("created_at")],
        "jobs": [[j.pk, j.subject_pk, j.stage, j.active_key is not None, j.attempts, j.last_error]
                 for j in Job.objects.order_by("pk")],
        "events": [[e.action, e.outcome, e.subject_pk] for e in AuditEvent.objects.order_by("seq")],
        "runs": Run.objects.count(),
        "chain_ok": audit.verify_chain().ok,
    }))
elif verb == "start-run":
    run = sweep.start_run(get_policy("churned-tenants"))
    print(json.dumps([j for j in run.jobs.order_by("pk").values_list("pk", flat=True)]))
elif verb == "deliver":
    job_id, times = int(args[0]), int(args[1])
    print(json.dumps([tasks.process_job.delay(job_id, "churned-tenants").id for _ in range(times)]))
elif verb == "run-policy":
    print(json.dumps(tasks.run_policy.delay("churned-tenants").id))
else:
    raise SystemExit(f"unknown verb {verb}")
"""


# -- Redis and the database ------------------------------------------------------

def _redis():
    try:
        import redis
    except ImportError:  # pragma: no cover
        return None, "the redis package is not installed"
    try:
        client = redis.Redis.from_url(BROKER, socket_connect_timeout=3, socket_timeout=5)
        client.ping()
    except Exception as exc:  # noqa: BLE001  (any failure means "does not answer")
        return None, f"{type(exc).__name__}: {exc}"
    return client, ""


@pytest.fixture
def redis_client():
    client, why = _redis()
    if client is None:
        message = f"Redis at {BROKER} does not answer: {why}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the Celery worker tests must run)")
        pytest.skip(message)
    return client


class ServerDatabase:
    """A database of its own on the server DATABASE_URL points at; dropped afterwards."""

    def __init__(self, url):
        self.parts = urlsplit(url)
        self.scheme = self.parts.scheme.split("+")[0]
        self.name = f"gestore_celery_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    @property
    def url(self):
        return urlunsplit(self.parts._replace(path="/" + self.name))

    def _connect(self):
        p = self.parts
        user, password = unquote(p.username or ""), unquote(p.password or "")
        if self.scheme in ("postgres", "postgresql", "pgsql"):
            import psycopg

            return psycopg.connect(host=p.hostname, port=p.port or 5432, user=user or None,
                                   password=password or None, dbname="postgres", autocommit=True)
        import pymysql

        return pymysql.connect(host=p.hostname, port=p.port or 3306, user=user, password=password,
                               autocommit=True)

    def execute(self, sql):
        con = self._connect()
        try:
            with con.cursor() as cur:
                cur.execute(sql)
        finally:
            con.close()

    def create(self):
        if self.scheme.startswith(("postgres", "pgsql")):
            self.execute(f'CREATE DATABASE "{self.name}"')
        else:
            self.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def drop(self):
        if self.scheme.startswith(("postgres", "pgsql")):
            self.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")


class Deployment:
    """A migrated database with keys and demo data, and the workers serving it."""

    def __init__(self, tmp_path, redis_client):
        self.tmp = tmp_path
        self.redis = redis_client
        self.queue = f"gestore-test-{uuid.uuid4().hex[:12]}"
        self.var = tmp_path / "var"
        self.var.mkdir()
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "celery_test_settings.py").write_text(SETTINGS.format(queue=self.queue, broker=BROKER))
        (conf / "ctl.py").write_text(CTL)
        self.ctl_path = conf / "ctl.py"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "GESTORE_RETENTION_KEYS_DIR", "GESTORE_TEST_DB_NAME",
                                 "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_TASK_ALWAYS_EAGER")}
        self.env.update(
            DJANGO_SETTINGS_MODULE="celery_test_settings",
            PYTHONPATH=os.pathsep.join([str(conf), str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                                 if os.environ.get("PYTHONPATH") else [])),
            GESTORE_VAR_DIR=str(self.var),
            PYTHONUNBUFFERED="1",
        )
        self.server_db = None
        if os.environ.get("DATABASE_URL") and not os.environ["DATABASE_URL"].startswith("sqlite"):
            self.server_db = ServerDatabase(os.environ["DATABASE_URL"])
            self.server_db.create()
            self.env["DATABASE_URL"] = self.server_db.url
        self.workers = []

    # -- subprocesses
    def manage(self, *args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def ctl(self, *args):
        result = subprocess.run([sys.executable, str(self.ctl_path), *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"ctl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def state(self):
        return self.ctl("state")

    def setup(self, tenants=12):
        self.manage("migrate", "--verbosity", "0")
        self.manage("retention", "keygen")
        self.manage("gendemo", "--tenants", str(tenants), "--seed", "42")

    def start_worker(self, name):
        log = open(self.tmp / f"worker-{name}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "demoapp", "worker", "--pool=solo", "--concurrency=1",
             "-l", "info", "-Q", self.queue, "-n", f"{self.queue}-{name}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.workers.append((proc, log, self.tmp / f"worker-{name}.log"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited {proc.returncode}:\n{self.logs()}")
            if "ready." in (self.tmp / f"worker-{name}.log").read_text():
                return proc
            time.sleep(0.2)
        raise AssertionError(f"worker {name} not ready after 30 s:\n{self.logs()}")

    def logs(self):
        return "\n".join(f"--- {path.name}\n{path.read_text()[-4000:]}" for _, _, path in self.workers)

    def wait(self, done, what):
        deadline = time.monotonic() + TIMEOUT
        state = None
        while time.monotonic() < deadline:
            state = self.state()
            if done(state):
                return state
            for proc, _, _ in self.workers:
                if proc.poll() is not None:
                    raise AssertionError(f"a worker died while waiting for {what}:\n{self.logs()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last state {json.dumps(state)[:3000]}\n{self.logs()}")

    def close(self):
        for proc, log, _ in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown
        for proc, log, _ in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()
        try:
            self.redis.delete(self.queue, *(f"{self.queue}\x06\x16{p}" for p in range(10)),
                              f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
        except Exception:  # noqa: BLE001  (cleanup is best effort)
            pass
        if self.server_db is not None:
            self.server_db.drop()


@pytest.fixture
def deployment(tmp_path, redis_client):
    dep = Deployment(tmp_path, redis_client)
    try:
        dep.setup()
        yield dep
    finally:
        dep.close()


# -- assertions --------------------------------------------------------------------

def closed(state, subjects):
    """Every subject has a job and none of them is open."""
    jobs = [j for j in state["jobs"] if j[1] in subjects]
    return {j[1] for j in jobs} >= set(subjects) and not any(j[3] for j in jobs)


def assert_erased_once(state, subjects):
    for pk in subjects:
        assert pk not in state["orgs"], f"organisation {pk} was not erased"
        bundles = [b for b in state["bundles"] if b[0] == pk]
        assert len(bundles) == 1 and bundles[0][1], f"organisation {pk}: bundles {bundles}"
        for action in ("export", "verify", "erase"):
            got = [e for e in state["events"] if e[0] == action and e[2] == pk]
            assert got == [[action, "ok", pk]], f"organisation {pk}: {action} events {got}"
    assert state["chain_ok"]


# -- the tests ---------------------------------------------------------------------

def test_a_worker_runs_the_policy(deployment):
    before = deployment.state()
    subjects = before["selected"]
    assert len(subjects) == 2 and len(before["held"]) == 1
    kept = {pk: status for pk, status in before["orgs"].items() if pk not in subjects}
    deployment.start_worker("a")
    deployment.ctl("run-policy")
    state = deployment.wait(lambda s: s["runs"] == 1 and closed(s, subjects), "the run's jobs to close")
    assert_erased_once(state, subjects)
    assert state["orgs"] == kept  # the held tenant and the active ones stay
    assert [j[2] for j in state["jobs"]] == ["closed"] * len(subjects)
    assert len(list((deployment.var / "bundles").glob("*.age"))) == len(subjects)

    # A second run through the worker: nothing new.
    deployment.ctl("run-policy")
    again = deployment.wait(lambda s: s["runs"] == 2, "the second run")
    time.sleep(1)  # let any (wrongly) queued job task run
    again = deployment.state()
    assert again["bundles"] == state["bundles"] and again["events"] == state["events"]
    assert again["orgs"] == kept and len(again["jobs"]) == len(state["jobs"])
    deployment.manage("retention", "audit-verify")


def test_delivering_a_job_twice_does_the_work_once(deployment):
    before = deployment.state()
    subjects = before["selected"]
    assert len(subjects) == 2
    # Two workers, so the duplicate deliveries can run at the same time.
    deployment.start_worker("a")
    deployment.start_worker("b")
    job_ids = deployment.ctl("start-run")
    assert len(job_ids) == len(subjects)
    for job_id in job_ids:
        deployment.ctl("deliver", str(job_id), "2")
    state = deployment.wait(lambda s: closed(s, subjects), "every job to close")
    assert_erased_once(state, subjects)
    assert [j[2] for j in state["jobs"]] == ["closed"] * len(subjects)
    assert len(list((deployment.var / "bundles").glob("*.age"))) == len(subjects)
    # run_policy afterwards finds nothing to do.
    deployment.ctl("run-policy")
    deployment.wait(lambda s: s["runs"] == 2, "the follow-up run")
    time.sleep(1)
    after = deployment.state()
    assert after["bundles"] == state["bundles"] and after["events"] == state["events"]


def test_a_django_process_sends_with_the_demo_celery_app(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "celery_test_settings.py").write_text(SETTINGS.format(queue="q-test", broker="memory://"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(DJANGO_SETTINGS_MODULE="celery_test_settings", GESTORE_VAR_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(conf), str(ROOT)]))
    code = ("from gestore_retention import tasks; app = tasks.run_policy.app; "
            "print(app.main, app.conf.task_default_queue)")
    result = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["demoapp", "q-test"]
