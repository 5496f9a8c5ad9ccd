"""Restore benchmark: our restore of the JSON Lines export vs loaddata of
dumpdata's fixture vs the ancestor's importobjects, each into a fresh empty
migrated database, on the same rows.

The inputs are the export benchmark's files (var/bench/data/<db>-<rows>/out/);
when they are missing, the export children run first (not measured here).
Every figure is from a child process of its own, as in the export benchmark.

Run alone: `python -m benchmarks --only restore --sizes 10000,100000`.
"""
import json
import os
import sys
from pathlib import Path

from . import _ancestor, common
from .common import Database, table
from .export import ANCESTOR_TIMEOUT, BENCH, TIMEOUT, attempt, result_rows, verdicts

NAME = "restore"
TITLE = "Restore: streaming restore vs loaddata vs the ancestor's importobjects"
TARGET_SPEED = 10.0  # our rows/s at least this many times loaddata's


# -- child side -------------------------------------------------------------------
def _records(path):
    with open(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def child(mode):
    import django

    django.setup()
    from django.core.management import call_command

    from benchmarks.common import counted, demo_rows
    from gestore_retention.restore import restore

    out = Path(os.environ["BENCH_OUT"])
    if mode == "ours":
        with counted() as c:
            restore(_records(out / "ours.jsonl"))  # a one-shot iterator: streamed, checked batch by batch
    elif mode == "loaddata":
        with counted() as c:
            call_command("loaddata", str(out / "dumpdata.jsonl"), verbosity=0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return {"seconds": c["seconds"], "queries": c["queries"], "rows": sum(demo_rows().values())}


# -- parent side ------------------------------------------------------------------
LABELS = {
    "loaddata": "loaddata (dumpdata's jsonl fixture)",
    "ours": "ours: restore() of the JSON Lines export",
    "ancestor": "ancestor: importobjects",
}


def inputs(db):
    """Make sure the export files exist (the export benchmark writes them)."""
    out = db.dir / "out"
    env = db.env(db.template("filled"))
    if not (out / "ours.jsonl").exists():
        common.run_child("export", "ours", env, TIMEOUT)
    if not (out / "dumpdata.jsonl").exists():
        common.run_child("export", "dumpdata", env, TIMEOUT)
    if not (out / "ancestor-import.json").exists():
        common.run_child("_ancestor", "prepare", env, TIMEOUT, _ancestor.python_path())


def measure_size(db):
    python = _ancestor.python_path()
    out = {}
    out["loaddata"] = attempt(lambda: common.run_child(NAME, "loaddata", db.fresh("empty"), TIMEOUT))
    out["ours"] = attempt(lambda: common.run_child(NAME, "ours", db.fresh("empty"), TIMEOUT))
    out["ancestor"] = attempt(lambda: common.run_child("_ancestor", "import", db.fresh("empty"),
                                                       ANCESTOR_TIMEOUT, python))
    return out


HEADERS = ["db", "rows", "tool", "rows restored", "seconds", "rows/s", "ratio to loaddata", "peak RSS MB", "queries"]


def run(sizes, databases):
    measured = {}  # {vendor: {rows: {tool: (result, rss)}}}
    rows_out = []
    for vendor, url in databases.items():
        for rows in sizes:
            db = Database(BENCH, vendor, url, rows, keep=True)
            db.build()
            db.build("empty")
            inputs(db)
            results = measure_size(db)
            measured.setdefault(vendor, {})[rows] = results
            size_rows = result_rows(vendor, rows, results, peer="loaddata", labels=LABELS)
            rows_out.extend(size_rows)
            print(table(size_rows, HEADERS), file=sys.stderr, flush=True)
    lines = ["Targets:", *verdicts(measured, "ours", "loaddata", TARGET_SPEED, "our restore")]
    return table(rows_out, HEADERS) + "\n\n" + "\n".join(lines) + "\n\n" + notes()


def notes():
    return "\n".join([
        "Notes:",
        "- Each restore goes into a fresh copy of an empty migrated database. `rows restored` is counted in the "
        "demo app's tables afterwards (outside the timing), so a tool that loads fewer rows shows it.",
        "- Ours: `restore.restore()` over a one-shot iterator of the JSON Lines file (streamed; conflicts checked "
        "batch by batch as rows are written, all in one transaction). loaddata reads dumpdata's `jsonl` fixture, "
        "which it also streams line by line, and saves one object at a time.",
        "- exportobjects cannot export the demo subject (see the export table), so importobjects gets a file in "
        "exportobjects' layout (version, libraries, provided_objects, objects) whose objects are dumpdata's "
        "records: the same rows in the same shape (Django's python serializer) that exportobjects writes. "
        f"It runs in its own virtualenv ({_ancestor.describe()}); timeout {ANCESTOR_TIMEOUT:.0f} s, "
        f"other children {TIMEOUT:.0f} s.",
        "- Seconds are of the operation only; peak RSS is the child process's own (Django loaded); queries are "
        "counted with a connection execute_wrapper (an executemany counts once).",
        "- The machine has 2 cores and is shared: compare the ratios measured in the same run, not absolute figures.",
    ])


if __name__ == "__main__":
    result = child(sys.argv[1])
    print(json.dumps(result))
