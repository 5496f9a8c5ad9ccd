"""Export benchmark: our walk + export (JSON Lines; and the sealed bundle) vs
Django's dumpdata vs the ancestor's exportobjects, on the same rows.

One database per vendor and size holds only the demo subject (one
organisation owning N rows; `common.build`), so dumpdata of the demo app's
tables dumps exactly the subject's rows: dumpdata cannot select one
organisation. Every figure is from a child process of its own (peak RSS is
the tool's own, Django's start-up included); seconds are of the operation
only, queries are counted with a connection execute_wrapper in the child.

The files written here (var/bench/data/<db>-<rows>/out/) are the restore
benchmark's inputs.

Run alone: `python -m benchmarks --only export --sizes 10000,100000`.
"""
import json
import os
import sys
import time
from pathlib import Path

from . import _ancestor, common
from .common import ChildFailed, ChildTimeout, Database, table

NAME = "export"
TITLE = "Export: walk + records vs dumpdata vs the ancestor's exportobjects"
BENCH = "data"  # the templates are shared with the restore benchmark
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", 1200))  # seconds per child
ANCESTOR_TIMEOUT = float(os.environ.get("BENCH_ANCESTOR_TIMEOUT", 600))
TARGET_SPEED = 3.0  # our rows/s at least this many times dumpdata's
TARGET_RSS = 1.2  # peak RSS at the largest size within this factor of the 10x smaller one


# -- child side -------------------------------------------------------------------
def child(mode):
    import django

    django.setup()
    from django.core.management import call_command

    from benchmarks.common import counted
    from demoapp.models import Organisation
    from gestore_retention.graph.walk import Scope, walk
    from gestore_retention.records import Export

    out = Path(os.environ["BENCH_OUT"])
    if mode == "dumpdata":
        path = out / "dumpdata.jsonl"
        with counted() as c:
            call_command("dumpdata", "demoapp", format="jsonl", output=str(path), verbosity=0)
        with open(path) as fh:
            rows = sum(1 for line in fh if line.strip())
        return {"seconds": c["seconds"], "queries": c["queries"], "rows": rows}
    org = Organisation.objects.get(slug="bench")
    scope = Scope.of(boundaries=["demoapp.Organisation"])
    if mode == "ours":
        rows = 0
        with counted() as c, open(out / "ours.jsonl", "w") as fh:
            t = time.perf_counter()
            plan = walk([org], scope=scope)
            walk_seconds = time.perf_counter() - t
            for record in Export(plan).records():
                fh.write(record.text)  # the record's JSON, encoded once by Export
                fh.write("\n")
                rows += 1
        return {"seconds": c["seconds"], "queries": c["queries"], "rows": rows,
                "walk_seconds": walk_seconds, "walk_queries": plan.queries}
    if mode == "bundle":
        from gestore_retention.bundle import generate_keys
        from gestore_retention.pipeline import export_bundle

        generate_keys(os.environ["GESTORE_RETENTION_KEYS_DIR"])
        with counted() as c:
            plan = walk([org], scope=scope)
            bundle = export_bundle(plan)
        rows = sum(sum(per.values()) for per in bundle.counts.values())
        return {"seconds": c["seconds"], "queries": c["queries"], "rows": rows, "bytes": bundle.size}
    raise SystemExit(f"unknown mode {mode!r}")


# -- parent side ------------------------------------------------------------------
TOOLS = ("dumpdata", "ours", "bundle", "ancestor")
LABELS = {
    "dumpdata": "dumpdata demoapp --format jsonl",
    "ours": "ours: walk + records -> JSON Lines",
    "bundle": "ours: walk + export_bundle (sealed, stored)",
    "ancestor": "ancestor: exportobjects",
}


def attempt(fn):
    """Return (result, peak RSS MB) or (text saying what happened, None)."""
    try:
        return fn()
    except ChildTimeout as exc:
        return f"timeout ({exc})", None
    except ChildFailed as exc:
        return f"crashed: {exc.last_line()[:160]}", None


def measure_size(db):
    """Measure every tool on one database; return {tool: (result dict or text, rss)}."""
    env = db.env(db.template("filled"))
    out = {}
    out["dumpdata"] = attempt(lambda: common.run_child(NAME, "dumpdata", env, TIMEOUT))
    out["ours"] = attempt(lambda: common.run_child(NAME, "ours", env, TIMEOUT))
    out["bundle"] = attempt(lambda: common.run_child(NAME, "bundle", db.fresh(), TIMEOUT))
    python = _ancestor.python_path()
    out["ancestor"] = attempt(lambda: common.run_child("_ancestor", "export", env, ANCESTOR_TIMEOUT, python))
    return out


def speed(result):
    return result["rows"] / result["seconds"] if isinstance(result, dict) and result["seconds"] else None


def result_rows(vendor, rows, results, peer="dumpdata", labels=LABELS):
    """Return the table rows of one size: [db, rows, tool, written, s, rows/s, ratio, RSS, queries]."""
    base = speed(results[peer][0])
    out = []
    for tool, (res, rss) in results.items():
        if not isinstance(res, dict):
            out.append([vendor, f"{rows:,}", labels[tool], res, "", "", "", "", ""])
            continue
        s = speed(res)
        queries = f"{res['queries']:,}"
        if "walk_queries" in res:
            queries += f" (walk {res['walk_queries']:,})"
        seconds = f"{res['seconds']:.2f}"
        if "walk_seconds" in res:
            seconds += f" (walk {res['walk_seconds']:.2f})"
        written = f"{res['rows']:,}"
        if "bytes" in res:
            written += f" ({res['bytes'] / 1e6:.1f} MB sealed)"
        out.append([vendor, f"{rows:,}", labels[tool], written, seconds, f"{s:,.0f}",
                    f"{s / base:.2f}x" if base else "", f"{rss:.0f}", queries])
    return out


def verdicts(measured, tool, peer, target_speed, what):
    """Return lines saying whether `tool` met the speed and memory targets, per database."""
    lines = []
    for vendor, by_size in measured.items():
        sizes = sorted(by_size)
        parts = []
        for rows in sizes:
            ours, theirs = speed(by_size[rows][tool][0]), speed(by_size[rows][peer][0])
            if ours and theirs:
                ok = "met" if ours / theirs >= target_speed else "MISSED"
                parts.append(f"{rows:,}: {ours / theirs:.2f}x ({ok})")
            else:
                parts.append(f"{rows:,}: not measured")
        lines.append(f"- {vendor}, {what} >= {target_speed:g}x {peer} rows/s: " + "; ".join(parts))
        big = sizes[-1]
        small = big // 10
        if big >= 1_000_000 and small in by_size:
            rss_big, rss_small = by_size[big][tool][1], by_size[small][tool][1]
            if rss_big and rss_small:
                ratio = rss_big / rss_small
                ok = "met" if ratio <= TARGET_RSS else "MISSED"
                lines.append(f"- {vendor}, {what} peak RSS at {big:,} rows <= {TARGET_RSS}x {small:,}: "
                             f"{rss_big:.0f} MB / {rss_small:.0f} MB = {ratio:.2f}x ({ok})")
            else:
                lines.append(f"- {vendor}, {what} peak RSS {big:,} vs {small:,}: not measured")
    return lines


def run(sizes, databases):
    measured = {}  # {vendor: {rows: {tool: (result, rss)}}}
    rows_out = []
    for vendor, url in databases.items():
        for rows in sizes:
            db = Database(BENCH, vendor, url, rows, keep=True)
            db.build()
            results = measure_size(db)
            measured.setdefault(vendor, {})[rows] = results
            rows_out.extend(result_rows(vendor, rows, results))
            print(table(rows_out[-len(results):], HEADERS), file=sys.stderr, flush=True)
    lines = ["Targets:", *verdicts(measured, "ours", "dumpdata", TARGET_SPEED, "our export (JSON Lines)")]
    text = table(rows_out, HEADERS) + "\n\n" + "\n".join(lines) + "\n\n" + notes()
    return text


HEADERS = ["db", "rows", "tool", "rows written", "seconds", "rows/s", "ratio to dumpdata", "peak RSS MB", "queries"]


def notes():
    return "\n".join([
        "Notes:",
        "- Each database holds only the demo subject (one organisation, 10 projects, N/10 documents, the rest "
        "comments), so `dumpdata demoapp` dumps the same rows our walk selects: dumpdata cannot select one "
        "organisation. Both write JSON Lines (dumpdata's own `jsonl` format).",
        "- Seconds are of the operation only (Django's start-up excluded); rows/s = rows written / seconds. Peak RSS is "
        "the child process's own (os.wait4), Django and the settings loaded. Queries are counted with a connection "
        "execute_wrapper in the child; ours includes the walk's (in brackets: `plan.queries` and the walk's seconds).",
        "- The sealed bundle row is the whole `pipeline.export_bundle`: records, JSON, zlib, age encryption, "
        "signature, storage, the Bundle row and its audit event.",
        f"- The ancestor is {_ancestor.describe()}, in its own virtualenv (var/bench/ancestor-venv), run as "
        f"`exportobjects demoapp.Organisation.<pk>`; timeout {ANCESTOR_TIMEOUT:.0f} s. Other children time out "
        f"after {TIMEOUT:.0f} s. It fails on the subject's first null foreign key (Organisation.owner): "
        "`processors.process_foreign_key` queues the related object, None, and `generate_objects` then calls "
        "`instance_representation(None)`; the logic does not depend on the Django version.",
        "- PostgreSQL templates are ANALYZEd after loading, as autovacuum would do on a live site "
        "(`common.Database.analyze`): a freshly loaded table without statistics can get a plan no live "
        "site would see (an earlier walk, paginated by `ORDER BY id LIMIT n`, read whole primary-key indexes).",
        "- The walk filters each query on whole runs of keys (one range condition for keys inserted together), "
        "and records read dense stretches of up to 20,000 keys per query: hence few queries per model.",
        "- The machine has 2 cores and is shared: compare the ratios measured in the same run, not absolute figures.",
        f"- Python {sys.version.split()[0]}.",
    ])


if __name__ == "__main__":
    result = child(sys.argv[1])
    print(json.dumps(result))
