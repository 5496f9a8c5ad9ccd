"""The ancestor tool, gestore 0.1.0.dev4 from PyPI, in a virtualenv of its own.

Parent side: `python_path()` creates var/bench/ancestor-venv (once; again when
the pinned requirements change) with gestore, the same Django and psycopg
versions as this project's virtualenv, and setuptools (gestore imports
pkg_resources). Child side, run by that virtualenv's Python:

    python -m benchmarks._ancestor export    exportobjects demoapp.Organisation.<pk>
    python -m benchmarks._ancestor prepare   write importobjects' input file
    python -m benchmarks._ancestor import    importobjects <file>

The child configures a minimal Django project (auth, contenttypes, demoapp,
gestore) over DATABASE_URL; gestore_retention is not installed there. The
demo's Celery app is replaced by a stub: demoapp imports it on start-up and the
ancestor has no use for it.

Only the standard library is imported at module level (the parent imports
this module too).
"""
import json
import os
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "var" / "bench" / "ancestor-venv"
PACKAGE = "gestore==0.1.0.dev4"


# -- parent side ----------------------------------------------------------------
def requirements():
    """Return the pins: the ancestor, and this venv's Django and psycopg versions."""
    return [PACKAGE, f"Django=={metadata.version('Django')}",
            f"psycopg[binary]=={metadata.version('psycopg')}", "setuptools<81"]


def python_path():
    """Return the ancestor virtualenv's python, creating the virtualenv if needed."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    reqs = requirements()
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(reqs)):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *reqs], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stamp.write_text("\n".join(reqs))
    return py


def describe():
    """Return the ancestor's versions as text, for the notes."""
    return f"{PACKAGE}, " + ", ".join(requirements()[1:3])


# -- child side -----------------------------------------------------------------
def _setup():
    import django
    from django.conf import settings

    sys.modules.setdefault("demoapp.celery", types.SimpleNamespace(app=None))  # see the docstring
    from demoapp.settings import database_from_url

    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    settings.configure(
        DEBUG=False, SECRET_KEY="bench", USE_TZ=True, TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DATABASES={"default": database_from_url(os.environ["DATABASE_URL"])},
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "demoapp", "gestore"],
    )
    django.setup()


def _export():
    from django.core.management import call_command

    from benchmarks.common import counted
    from demoapp.models import Organisation

    out = Path(os.environ["BENCH_OUT"]) / "ancestor-export.json"
    org = Organisation.objects.get(slug="bench")
    with open(os.devnull, "w") as sink, counted() as c:
        call_command("exportobjects", f"demoapp.Organisation.{org.pk}", output=str(out), stdout=sink)
    with open(out) as fh:
        rows = len(json.load(fh)["objects"])
    return {"seconds": c["seconds"], "queries": c["queries"], "rows": rows}


def _prepare():
    """Write importobjects' input (exportobjects' file layout) holding dumpdata's records.

    exportobjects cannot export the demo subject (see benchmarks/export.py), so
    its own export is not available; its records have Django's python
    serializer shape, which is what dumpdata writes.
    """
    import datetime as dt

    from gestore import __version__
    from gestore.utils import get_pip_packages

    out = Path(os.environ["BENCH_OUT"])
    header = {"date": dt.datetime.now().isoformat(), "host_name": "bench", "ip_address": "127.0.0.1",
              "libraries": get_pip_packages(), "version": __version__}
    rows = 0
    with open(out / "dumpdata.jsonl") as src, open(out / "ancestor-import.json", "w") as dst:
        dst.write("{\n")
        for key, value in header.items():
            dst.write(f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)},\n")
        dst.write(' "objects": [')
        first = None
        for line in src:
            if not line.strip():
                continue
            record = json.loads(line)
            if first is None and record["model"] == "demoapp.organisation":
                first = record["pk"]
            dst.write(("\n  " if rows == 0 else ",\n  ") + json.dumps(record, sort_keys=True))
            rows += 1
        dst.write(f'\n ],\n "provided_objects": ["demoapp.Organisation.{first}"]\n}}\n')
    return {"rows": rows}


def _import():
    from django.core.management import call_command

    from benchmarks.common import counted, demo_rows

    path = Path(os.environ["BENCH_OUT"]) / "ancestor-import.json"
    with open(os.devnull, "w") as sink, counted() as c:
        call_command("importobjects", str(path), stdout=sink)
    return {"seconds": c["seconds"], "queries": c["queries"], "rows": sum(demo_rows().values())}


if __name__ == "__main__":
    _setup()
    result = {"export": _export, "prepare": _prepare, "import": _import}[sys.argv[1]]()
    print(json.dumps(result))
