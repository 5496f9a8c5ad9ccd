"""Records: an exact round trip of every built-in field type, and loaddata compatibility."""
import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import JSONField, Value

from gestore_retention.graph.walk import walk
from gestore_retention.records import Export, canonical, decoder, encoder
from gestore_retention.restore import restore
from tests.caseapp import models as c

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.timezone.utc
FULL = dict(
    dec=Decimal("-123456789.000100"),
    at=dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    day=dt.date(1999, 12, 31),
    clock=dt.time(23, 59, 58, 999999),
    span=dt.timedelta(days=-1, seconds=5, microseconds=7),
    doc={"a": None, "b": False, "c": [1, 2.5, "x"], "d": {"e": "it's"}},
    strict_doc=[1, "two", None],
    blob=b"\x00\xff\x10binary",
    uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    big=-(2**63),
    pbig=2**63 - 1,
    small=-32768,
    flag=False,
    ratio=0.1,
    text="ünïcode ✓\n'\" \\",
    ip="2001:db8::1",
    email="a@example.org",
    url="https://example.org/?q=1",
    file="specimens/x.txt",
)
VARIANTS = [
    FULL,
    dict(FULL, dec=Decimal("0.000000"), span=dt.timedelta(microseconds=-1), doc="plain string", strict_doc={},
         flag=True, ratio=-1e308, big=2**63 - 1, text=""),
    dict(FULL, dec=Decimal("99999999.999999"), span=dt.timedelta(days=999999), doc=[], strict_doc="s",
         ratio=5e-324, clock=dt.time(0, 0), at=dt.datetime(1970, 1, 1, tzinfo=UTC)),
    dict(FULL, doc='{"looks": "like json"}', strict_doc=0),
    {},  # every nullable column SQL NULL
]
NULLABLE = ["dec", "at", "day", "clock", "span", "doc", "blob", "uid", "big", "pbig", "small", "flag", "ratio", "ip"]


def make():
    b = c.Box.objects.create(code="b")
    pks = [c.Specimen.objects.create(box=b, **values).pk for values in VARIANTS]
    return b, pks


def make_json_nulls():
    """Rows holding the JSON value null (not SQL NULL): in a nullable and in a NOT NULL column."""
    b = c.Box.objects.create(code="j")
    return b, [c.Specimen.objects.create(box=b, doc=Value(None, JSONField())).pk,
               c.Specimen.objects.create(box=b, strict_doc=Value(None, JSONField())).pk]


def expected(values):
    out = {f: None for f in NULLABLE}
    out.update(text="", email="", url="", file="", strict_doc={})
    out.update(values)
    return out


def current(pk):
    obj = c.Specimen.objects.get(pk=pk)
    row = {f: getattr(obj, f) for f in expected({})}
    row["blob"] = None if row["blob"] is None else bytes(row["blob"])
    row["file"] = row["file"].name or ""
    return row


def test_records_encode_every_field_type_exactly_and_decode_back():
    b, pks = make()
    j, (doc_null, strict_null) = make_json_nulls()
    records = {r["pk"]: r for r in Export(walk([b, j])).records() if r["model"] == "app.specimen" and r["role"] == "owned"}
    fields = {f.name: f for f in c.Specimen._meta.concrete_fields}
    for pk, values in zip(pks, VARIANTS):
        record = records[pk]
        json.loads(json.dumps(record))  # plain JSON: no repr, no Python objects
        for name, want in expected(values).items():
            raw = record["fields"][name]
            got = None if raw is None else decoder(fields[name])(raw)
            if name == "blob" and got is not None:
                got = bytes(got)
            assert got == want, (pk, name, raw)
            assert type(got) is type(want), (pk, name)
    assert records[pks[0]]["fields"]["dec"] == "-123456789.000100"
    assert records[pks[1]]["fields"]["dec"] == "0.000000"  # never "0E-6"
    assert records[pks[0]]["fields"]["at"] == "2026-01-02T03:04:05.123456+00:00"
    assert records[pks[0]]["fields"]["doc"] == FULL["doc"]  # JSON as JSON, not as text
    assert records[pks[3]]["fields"]["doc"] == '{"looks": "like json"}'  # a str stays a str
    # JSON null and SQL NULL both read as None; the record tells them apart.
    assert records[pks[4]]["fields"]["doc"] is None and "json_null" not in records[pks[4]]
    assert records[doc_null]["fields"]["doc"] is None and records[doc_null]["json_null"] == ["doc"]
    assert records[strict_null]["fields"]["strict_doc"] is None and records[strict_null]["json_null"] == ["strict_doc"]
    assert "json_null" not in records[pks[0]]


def test_each_record_carries_its_canonical_text():
    """The text Export encodes once (digest and bundle line) is exactly json.dumps of the record, sorted."""
    b, _ = make()
    j, _ = make_json_nulls()
    records = list(Export(walk([b, j])).records())
    assert any("json_null" in r for r in records)
    for record in records:
        assert canonical(record) == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record["role"] == "file" or record.text == canonical(record)


def test_encoder_and_decoder_are_inverse_for_edge_values():
    f = c.Specimen._meta.get_field
    for name, value in [("span", dt.timedelta(days=-3, microseconds=1)), ("span", dt.timedelta(0)),
                        ("dec", Decimal("1E+2")), ("clock", dt.time(12, 0, 0, 1)), ("uid", uuid.uuid4())]:
        assert decoder(f(name))(encoder(f(name))(value)) == value, name


def test_restore_gives_back_every_value_exactly():
    b, pks = make()
    records = list(Export(walk([b])).records())
    before = {pk: current(pk) for pk in pks}
    for pk, values in zip(pks, VARIANTS):
        assert before[pk] == expected(values), pk
    b.delete()
    restore(records)
    for pk in pks:
        assert current(pk) == before[pk], pk
    assert c.Specimen.objects.filter(pk=pks[4], doc__isnull=True).exists()  # SQL NULL stays SQL NULL


def test_restore_keeps_json_null_apart_from_sql_null():
    b, (doc_null, strict_null) = make_json_nulls()
    records = list(Export(walk([b])).records())
    b.delete()
    restore(records)
    assert c.Specimen.objects.filter(pk=doc_null, doc=Value(None, JSONField())).exists()
    assert not c.Specimen.objects.filter(pk=doc_null, doc__isnull=True).exists()
    assert c.Specimen.objects.filter(pk=strict_null, strict_doc=Value(None, JSONField())).exists()


def test_a_decrypted_payload_loads_with_loaddata(tmp_path):
    """The last resort: Django's own loaddata reads the records as a JSONL fixture.

    It takes the owned and reference records (rows to create); update records
    (old values of rows outside the subject) and file records (bytes) are for
    our restore only. loaddata cannot tell JSON null from SQL NULL.
    """
    b, pks = make()
    c.Lid.objects.create(box=b, color="red")
    c.Label.objects.create(target=b, text="l")
    c.Slot.objects.create(box=b, n=1)
    before = {pk: current(pk) for pk in pks}
    box_pk = b.pk
    records = list(Export(walk([b])).records())
    path = tmp_path / "payload.jsonl"
    with open(path, "w") as fh:
        for r in records:
            if r["role"] in ("owned", "reference"):
                fh.write(json.dumps(r) + "\n")
    b.delete()
    assert not c.Specimen.objects.exists()
    call_command("loaddata", str(path), verbosity=0)
    for pk in pks:
        assert current(pk) == before[pk], pk
    assert c.Lid.objects.get().color == "red" and c.Label.objects.get().target.pk == box_pk
    assert c.Slot.objects.get().pk == (box_pk, 1)


def test_chunk_digests_of_the_export_are_what_the_erase_recomputes():
    """Per-chunk digests: integer keys hashed from one stream, UUID keys chunk by chunk, both as chunk_digest sees them."""
    from gestore_retention.graph.walk import _chunks
    from gestore_retention.records import chunk_digest

    box = c.Box.objects.create(code="chunks")
    for _ in range(10):
        crate = c.Crate.objects.create(box=box)
        for n in range(3):
            c.Bottle.objects.create(crate=crate, sku=c.Sku.objects.get_or_create(code=f"s{n}")[0])
    plan = walk([box])
    exp = Export(plan, batch_size=4)
    list(exp.records())
    chunks = exp.chunks
    assert chunks["size"] == 4 and {"app.Crate", "app.Bottle"} <= set(chunks["owned"])
    for label, entries in chunks["owned"].items():
        keys = list(_chunks(plan.owned[label], 4))
        assert len(entries) == len(keys), label
        for (first, last, n, sha), chunk in zip(entries, keys):
            assert (n, sha) == chunk_digest(plan, label, chunk), (label, first)
            assert n == len(chunk)
