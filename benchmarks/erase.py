"""Erase benchmark: guarded erase vs Django's own delete(), and the full
pipeline per subject, stage by stage, vs dumpdata plus delete().

Each figure comes from a fresh copy of the same database (an SQLite file
copied, or a PostgreSQL database created from a template), in a child
process, so peak RSS is the operation's own. Times are of the operation
only (Django's start-up excluded).

Run alone: `python -m benchmarks --only erase --sizes 10000,100000`.
"""
import json
import os
import sys
import time

from . import common
from .common import Database, table

NAME = "erase"
TITLE = "Erase: guarded erase vs delete(); pipeline vs dumpdata + delete()"


# -- child side ---------------------------------------------------------------
def child(mode):
    import django

    django.setup()
    from django.core.management import call_command

    from demoapp.models import Organisation
    from gestore_retention.bundle import generate_keys
    from gestore_retention.graph.walk import Scope, walk
    from gestore_retention.records import Export

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
def run_child(mode, env):
    return common.run_child(NAME, mode, env)


def run(sizes, databases):
    rows_out, notes = [], []
    for vendor, url in databases.items():
        for rows in sizes:
            if rows > 100_000:
                notes.append(f"{vendor} {rows:,} rows: skipped to keep `make bench` short (the peer, Django's "
                             "delete(), holds every instance in memory); batched erasure is covered by "
                             "tests/test_erase_batch.py")
                continue
            db = Database(NAME, vendor, url, rows)
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
