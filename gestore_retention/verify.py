"""Engine: prove that records restore, by a trial that is rolled back.

Inside a transaction: erase the subjects as the erase step would, restore
the records, read every restored row back and compare it with its record,
then roll everything back. Nothing stays; the database has validated the
data (constraints, types) on the way.
"""
import base64
from collections import defaultdict
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from . import conf
from .erase import delete_plan
from .errors import EraseRefused, VerificationFailed
from .graph import relations
from .records import ModelCodec, encoder, model_for_record
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


def verify_restores(plan, records_factory, *, batch_size=None):
    """Trial-restore the records from `records_factory()` over `plan`'s subjects.

    `records_factory` is called twice (restore, then compare) and must return
    a fresh iterator of the same records each time, e.g. by opening the stored
    bundle again. Raise VerificationFailed on any difference.
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
            result = restore(records_factory(), using=plan.using, batch_size=batch)
            written = result.files_written
            compared, mismatches = compare(records_factory(), using=plan.using, batch_size=batch)
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
