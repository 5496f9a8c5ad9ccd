"""BR-25: export and restore memory is bounded by the batch size; Decimal totals stay exact.

The case's sizes (200,000 and 400,000 entries) take several minutes per
database under tracemalloc, so `make test` runs 30,000 and 60,000, which is
enough to see memory that grows with the rows (a set of keys costs 60-100
bytes a row); `make test-scale` runs the case's sizes. GESTORE_BR25_N sets the
smaller size (the larger is twice it).
"""
import json
import os
import tracemalloc
from decimal import Decimal

import pytest
from django.db.models import Sum

from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.caseapp.models import Entry, Ledger

pytestmark = [pytest.mark.django_db(databases=["default", "other"], transaction=True), pytest.mark.slow]

N = int(os.environ.get("GESTORE_BR25_N", "30000"))
MIB = 1024 * 1024
MEMO = "m" * 100


def add_entries(ledger, start, stop):
    batch = []
    for i in range(start, stop):
        batch.append(Entry(ledger=ledger, amount=Decimal(i) / 100 + Decimal("0.01"), memo=MEMO))
        if len(batch) == 5000:
            Entry.objects.bulk_create(batch)
            batch = []
    Entry.objects.bulk_create(batch)


def peak(fn):
    """Run fn() under tracemalloc; return (its result, peak traced bytes)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def export_to(path, ledger):
    def run():
        with open(path, "w") as fh:
            for record in Export(walk([ledger])).records():
                fh.write(json.dumps(record) + "\n")
    return peak(run)[1]


def restore_from(path):
    def records():
        with open(path) as fh:
            for line in fh:
                yield json.loads(line)
    return peak(lambda: restore(records, using="other"))[1]


def measure(ledger, path, n):
    export_peak = export_to(path, ledger)
    Entry.objects.using("other").all().delete()
    Ledger.objects.using("other").all().delete()
    restore_peak = restore_from(path)
    other = Entry.objects.using("other")
    assert other.count() == n
    assert other.aggregate(s=Sum("amount"))["s"] == Entry.objects.aggregate(s=Sum("amount"))["s"]
    return export_peak, restore_peak


def test_memory_is_bounded_and_totals_exact(tmp_path):
    ledger = Ledger.objects.create(name="big")
    add_entries(ledger, 0, N)
    small = measure(ledger, tmp_path / "small.jsonl", N)
    total = Entry.objects.using("other").aggregate(s=Sum("amount"))["s"]
    assert total == sum(Decimal(i) / 100 + Decimal("0.01") for i in range(N))
    assert all(a.as_tuple().exponent == -2 for a in Entry.objects.using("other").values_list("amount", flat=True)[:1000])
    add_entries(ledger, N, 2 * N)
    big = measure(ledger, tmp_path / "big.jsonl", 2 * N)
    print(f"BR-25 peaks (MiB): export {small[0] / MIB:.1f} -> {big[0] / MIB:.1f}, "
          f"restore {small[1] / MIB:.1f} -> {big[1] / MIB:.1f}")
    assert small[0] < 64 * MIB and small[1] < 64 * MIB
    assert big[0] <= 1.25 * small[0], "export"
    assert big[1] <= 1.25 * small[1], "restore"
