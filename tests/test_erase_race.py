"""Invariant 1 under real concurrency: a row inserted by another connection
while the subject is being erased is never lost.

Each round builds a small tenant, exports it (records in memory, digest),
then erases it while a second thread, on its own database connection,
inserts a comment into the tenant's document at a random moment. Whatever
the interleaving, one of these holds:

* the insert committed first: the erase guard sees the new row and refuses;
* the erase committed first: the insert fails (its parent row is gone);
* the insert waited on the erase's lock and then failed.

Never both: an insert that committed and an erase that deleted it unseen.
"""
import datetime as dt
import os
import queue
import random
import threading
import time

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from demoapp import models as m
from gestore_retention.erase import erase
from gestore_retention.errors import EraseRefused
from gestore_retention.graph.walk import Scope, walk
from gestore_retention.records import Export

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = int(os.environ.get("GESTORE_RACE_ROUNDS", "1000"))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SCOPE = Scope.of(boundaries=["demoapp.Organisation"])


def small_tenant(i):
    org = m.Organisation.objects.create(name=f"r{i}", slug=f"race-{i}", status="churned", created_at=T0)
    project = m.Project.objects.create(org=org, name="p", budget=1, starts_on=T0.date(), estimate=dt.timedelta(0))
    doc = m.Document.objects.create(project=project, title="d", created_at=T0)
    m.Comment.objects.create(document=doc, body="first", created_at=T0)
    return org, doc


class Racer(threading.Thread):
    """A second connection that inserts a comment when told, after a delay."""

    def __init__(self):
        super().__init__(daemon=True)
        self.jobs = queue.Queue()

    def run(self):
        try:
            while (job := self.jobs.get()) is not None:
                doc_id, delay, outcome, done = job
                time.sleep(delay)
                try:
                    with transaction.atomic():
                        c = m.Comment.objects.create(document_id=doc_id, body="racing", created_at=T0)
                    outcome["committed"] = c.pk
                except (IntegrityError, DatabaseError) as exc:  # the parent row is gone
                    outcome["error"] = type(exc).__name__
                done.set()
        finally:
            connection.close()


def test_a_concurrent_insert_is_never_lost(vendor):
    rng = random.Random(20261203)
    counts = {"refused": 0, "erased": 0, "insert_failed": 0, "insert_committed": 0}
    estimate = 0.01
    racer = Racer()
    racer.start()
    try:
        for i in range(ROUNDS):
            org, doc = small_tenant(i)
            plan = walk([org], scope=SCOPE)
            exp = Export(plan)
            for _ in exp.records():
                pass
            outcome, done = {}, threading.Event()
            # Spread the insert from well before the erase to its end.
            offset = rng.uniform(-1.0, 1.0) * estimate
            racer.jobs.put((doc.pk, max(offset, 0.0), outcome, done))
            time.sleep(max(-offset, 0.0))
            started = time.perf_counter()
            try:
                erase(plan, expected_digest=exp.digest)
                erased = True
            except EraseRefused:
                erased = False
            except DatabaseError:  # SQLite "database is locked" after its timeout: nothing deleted
                erased = False
            estimate = 0.8 * estimate + 0.2 * (time.perf_counter() - started)
            assert done.wait(60), "the racing insert never finished"
            committed = "committed" in outcome
            counts["erased" if erased else "refused"] += 1
            counts["insert_committed" if committed else "insert_failed"] += 1
            if erased and committed:
                assert m.Comment.objects.filter(pk=outcome["committed"]).exists(), (
                    f"round {i}: a committed comment was deleted without being in the bundle"
                )
            if not erased:
                assert m.Organisation.objects.filter(pk=org.pk).exists()
                assert m.Comment.objects.filter(document=doc).count() == 1 + committed
    finally:
        racer.jobs.put(None)
        racer.join(10)
    print(f"\n{vendor}: {counts}")
    # Both interleavings must actually have happened for the test to mean anything.
    assert counts["erased"] and counts["insert_committed"], counts
