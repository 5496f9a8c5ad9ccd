"""Engine: prove that records restore, by a trial that is rolled back.

Inside a transaction: erase the subjects as the erase step would, restore
the records, read every restored row back and compare it with its record,
then roll everything back. Nothing stays; the database has validated the
data (constraints, types) on the way.
"""
import base64
import hashlib
from collections import defaultdict
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from . import conf
from .erase import delete_plan
from .errors import EraseRefused, VerificationFailed
from .graph import relations
from .records import ModelCodec, encoder, model_for_record, owned_digest
from .restore import remove_files, restore


@dataclass(frozen=True)
class VerificationReport:
    """The outcome of a trial restore."""

    compared: int  # records compared with the database
    restored: int  # rows the trial inserted
    mismatches: tuple  # human-readable differences, at most 20

    @property
    def ok(self):
        return not self.mismatches


class _Rollback(Exception):
    pass


def verify_restores(plan, records_factory, *, batch_size=None, expected_digest=None):
    """Trial-restore the records from `records_factory()` over `plan`'s subjects.

    `records_factory` must return a fresh iterator of the same records each
    time it is called, e.g. by opening the stored bundle again. Raise
    VerificationFailed on any difference.

    With `expected_digest` (the export's digest of the owned and update
    records) the restored rows are read back once, through the export's own
    digest, and stored files are checked against the hashes of the file
    records seen during the restore: one pass over the bundle. Only when
    that fails are the records read again and compared field by field, to
    say where. Without it, every record is compared with its row.
    """
    batch = batch_size or conf.get("BATCH_SIZE")
    report = None
    written = ()
    try:
        with transaction.atomic(using=plan.using):
            try:
                delete_plan(plan)  # the erase engine's own deletion (it asks the Collector when receivers listen)
            except IntegrityError as exc:  # a row that arrived after the walk still points at the subject
                raise EraseRefused(
                    f"rows arrived since the walk ({exc}); nothing was changed, walk and export again"
                ) from None
            files = []
            result = restore(_noting_files(records_factory(), files), using=plan.using, batch_size=batch)
            written = result.files_written
            if expected_digest is not None and owned_digest(plan, batch_size=batch) == expected_digest:
                compared = plan.total_owned + sum(len(pks) for per in plan.updates.values() for pks in per.values())
                mismatches = _compare_files(files)
                compared += len(files)
            else:
                compared, mismatches = compare(records_factory(), using=plan.using, batch_size=batch)
                if expected_digest is not None and not mismatches:
                    mismatches = ["the restored rows do not hash to the export's digest"]
            report = VerificationReport(compared=compared, restored=result.total, mismatches=tuple(mismatches[:20]))
            raise _Rollback
    except _Rollback:
        pass
    finally:
        remove_files(written)
    if not report.ok:
        raise VerificationFailed(
            f"trial restore differs from the export in {len(report.mismatches)} place(s): "
            + "; ".join(report.mismatches[:5])
        )
    return report


def _noting_files(records, files):
    """Pass records through, noting (model, field, stored name, SHA-256 of the bytes) of each file record."""
    for record in records:
        if record.get("role") == "file":
            for name, spec in record["fields"].items():
                if isinstance(spec, dict) and spec.get("data") is not None:
                    digest = hashlib.sha256(base64.b64decode(spec["data"])).hexdigest()
                    files.append((record["model"], record["pk"], name, spec["name"], digest))
        yield record


def _compare_files(files):
    out = []
    for label_lower, pk, name, stored_name, digest in files:
        storage = relations.get_model(label_lower)._meta.get_field(name).storage
        with storage.open(stored_name, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() != digest:
                out.append(f"{label_lower} pk {pk!r}: file {stored_name!r} differs")
    return out


def compare(records, *, using="default", batch_size=1000):
    """Compare records with the rows in `using`; return (compared, [difference])."""
    mismatches = []
    compared = 0
    pending = defaultdict(list)  # {(label_lower, role): [record]}

    def flush(key):
        nonlocal compared
        group = pending.pop(key)
        compared += len(group)
        mismatches.extend(_compare_batch(group, key[1], using))

    for record in records:
        key = (record["model"].lower(), record.get("role", "owned"))
        pending[key].append(record)
        if len(pending[key]) >= batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    return compared, mismatches


def _compare_batch(group, role, using):
    model = model_for_record(group[0])
    codec = ModelCodec.of(model)
    qs = model._base_manager.using(using)
    by_pk = {_pk_key(r["pk"]): r for r in group}
    pks = [codec_decode_pk(model, r["pk"]) for r in group]
    label = relations.label(model)
    out = []
    if role == "file":
        for r in group:
            for name, spec in r["fields"].items():
                if spec.get("data") is None:
                    continue
                storage = model._meta.get_field(name).storage
                with storage.open(spec["name"], "rb") as fh:
                    if base64.b64encode(fh.read()).decode() != spec["data"]:
                        out.append(f"{label} pk {r['pk']!r}: file {spec['name']!r} differs")
        return out
    if relations.is_natural_key_model(model):
        return out
    if role == "update":
        names = sorted({n for r in group for n in r["fields"]})
        fields = [model._meta.get_field(n) for n in names]
        rows = codec.fetch(qs, pks, len(pks) + 1, attnames=tuple(f.attname for f in fields),
                           names=tuple(names), encoders=tuple(encoder(f) for f in fields))
    else:
        rows = codec.fetch(qs, pks, len(pks) + 1)
    seen = set()
    for pk, fields in rows:
        key = _pk_key(pk)
        seen.add(key)
        record = by_pk.get(key)
        if record is None or role == "reference":
            continue
        for name, value in record["fields"].items():
            if fields.get(name) != value:
                out.append(f"{label} pk {pk!r} field {name!r}: exported {value!r}, restored {fields.get(name)!r}")
    for key, r in by_pk.items():
        if key not in seen:
            out.append(f"{label} pk {r['pk']!r}: missing after restore")
    return out


def _pk_key(pk):
    return tuple(pk) if isinstance(pk, list) else pk


def codec_decode_pk(model, value):
    pk = model._meta.pk
    return pk.to_python(value) if not pk.is_relation else pk.target_field.to_python(value)
