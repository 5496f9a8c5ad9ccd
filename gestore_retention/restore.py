"""Engine: apply a stream of records to a database, all or nothing.

Records arrive model by model in dependency order (see records.Export), so
rows are inserted in batches as they stream, with raw multi-row INSERTs and
no model signals. A nullable FK whose target model has not been inserted yet
(a self-reference, a cycle) is inserted as NULL and set afterwards, so the
restore works where constraints are checked per statement (MySQL/MariaDB,
PostgreSQL with NOT DEFERRABLE constraints). Content types are matched by
(app_label, model), never by the source database's id. Sequences end above
every restored key.

Everything happens in one transaction: any error leaves the database as it
was. Files a restore wrote are listed in the result so a caller that rolls
back (a dry run, a verification) can remove them.
"""
import base64
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import groupby

from django.core.files.base import ContentFile
from django.core.management.color import no_style
from django.db import connections, models, transaction
from django.db.models.base import ModelState

from . import conf
from .errors import RestoreError
from .graph import relations
from .records import decoder, model_for_record


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did. Counts are {label: n}."""

    inserted: dict  # owned rows inserted
    references_created: dict  # reference rows that were missing and got inserted
    references_matched: dict  # reference rows already present (by key or natural key)
    updates_applied: dict  # rows whose erased-changed columns were put back
    updates_missing: dict  # update records whose row does not exist here
    overridden: dict = field(default_factory=dict)  # existing owned rows overwritten (mode "override")
    files_written: tuple = field(default_factory=tuple)  # (storage, name) written

    @property
    def total(self):
        return sum(self.inserted.values()) + sum(self.references_created.values())


@dataclass
class _ModelInfo:
    model: type
    label: str
    fields: list  # insertable fields (local, concrete, not generated)
    decoders: dict  # {field name: decode}
    by_name: dict  # {field name: field}
    pk: object


def _info(model, cache={}):  # noqa: B006  (per-process cache of immutable metadata)
    if model not in cache:
        fields = [f for _, _, f in relations.local_fields(model)]
        cache[model] = _ModelInfo(
            model=model,
            label=relations.label(model),
            fields=fields,
            decoders={f.name: decoder(f) for f in fields},
            by_name={f.name: f for f in fields},
            pk=model._meta.pk,
        )
    return cache[model]


def _instance(model, values):
    obj = model.__new__(model)
    obj._state = ModelState()
    obj.__dict__.update(values)
    return obj


class _Restorer:
    def __init__(self, using, batch_size, storage, mode="fail"):
        if mode not in MODES:
            raise RestoreError(f"unknown restore mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.using = using
        self.batch = batch_size
        self.storage = storage
        self.connection = connections[using]
        self.pk_maps = defaultdict(dict)  # {label: {source pk: target pk}} for natural-key models
        self.done = set()  # labels whose rows are all inserted
        self.deferred = defaultdict(list)  # {(label, attname): [(pk, value)]}
        self.updates = defaultdict(lambda: defaultdict(list))  # {(label, attname): {value: [pk]}}
        self.inserted = defaultdict(int)
        self.ref_created = defaultdict(int)
        self.ref_matched = defaultdict(int)
        self.upd_applied = defaultdict(int)
        self.upd_missing = defaultdict(int)
        self.overridden = defaultdict(int)
        self.touched_models = set()
        self.files = []

    def qs(self, model):
        return model._base_manager.using(self.using)

    def run(self, records):
        current = None
        for (model_label, role), group in groupby(records, key=_group_key):
            if model_label != current:
                if current is not None:
                    self.done.add(current)
                current = model_label
            batch = []
            for record in group:
                batch.append(record)
                if len(batch) >= self.batch:
                    self.flush(batch, role)
                    batch = []
            if batch:
                self.flush(batch, role)
        self.apply_deferred()
        self.apply_updates()
        self.reset_sequences()

    def flush(self, batch, role):
        model = model_for_record(batch[0])
        info = _info(model)
        if role == "update":
            self.queue_updates(info, batch)
        elif role == "file":
            for record in batch:
                self.write_files(info, record)
        elif relations.is_natural_key_model(model):
            self.match_natural(info, batch)
        else:
            self.insert(info, batch, role)

    def decode_pk(self, info, value):
        try:
            return info.pk.to_python(value) if not info.pk.is_relation else decoder(info.pk)(value)
        except Exception as exc:
            raise RestoreError(f"{info.label}: bad primary key {value!r}: {exc}") from None

    def row_values(self, info, record):
        """Return (pk, {attname: python value}, {field name: deferred FK value})."""
        pk = self.decode_pk(info, record["pk"])
        values = {info.pk.attname: pk}
        deferred = {}
        fields = record.get("fields") or {}
        unknown = set(fields) - set(info.by_name)
        if unknown:
            raise RestoreError(f"{info.label} pk {record['pk']!r}: unknown field(s) {', '.join(sorted(unknown))}")
        for name, raw in fields.items():
            f = info.by_name[name]
            if f is info.pk:
                continue
            try:
                value = None if raw is None else info.decoders[name](raw)
            except Exception as exc:
                raise RestoreError(f"{info.label} pk {record['pk']!r}: field {name!r}: bad value {raw!r}: {exc}") from None
            if f.is_relation and value is not None:
                target = relations.label(f.related_model)
                value = self.pk_maps.get(target, {}).get(value, value)
                if f.null and target not in self.done and not f.primary_key:
                    deferred[f.name] = value
                    value = None
            values[f.attname] = value
        return pk, values, deferred

    def insert(self, info, batch, role):
        rows = [self.row_values(info, r) for r in batch]
        pks = [pk for pk, _, _ in rows]
        existing = set(self.qs(info.model).filter(pk__in=pks).values_list("pk", flat=True))
        if existing and role == "owned" and self.mode == "override":
            self.override(info, [(pk, values) for pk, values, _ in rows if pk in existing])
        elif existing and role == "owned":
            keys = ", ".join(repr(pk) for pk in sorted(existing, key=str)[:10])
            raise RestoreError(
                f"{info.label}: {len(existing)} row(s) to restore already exist (pk {keys}); nothing was restored",
                conflicts=[(info.label, pk) for pk in existing],
            )
        objs = []
        for pk, values, deferred in rows:
            if pk in existing and role == "reference":
                self.ref_matched[info.label] += 1
                continue
            for name, value in deferred.items():
                self.deferred[info.label, name].append((pk, value))
            if pk in existing:
                continue  # overridden above
            objs.append(_instance(info.model, values))
            (self.inserted if role == "owned" else self.ref_created)[info.label] += 1
        if objs:
            ops = self.connection.ops
            size = max(1, min(self.batch, ops.bulk_batch_size(info.fields, objs)))
            for i in range(0, len(objs), size):
                info.model._base_manager._insert(
                    objs[i : i + size], fields=info.fields, raw=True, using=self.using
                )
            self.touched_models.add(info.model)

    def override(self, info, rows):
        """Overwrite existing rows with the bundle's values (mode "override")."""
        names = [f.name for f in info.fields if f is not info.pk]
        objs = [_instance(info.model, values) for _, values in rows]
        if names:
            self.qs(info.model).bulk_update(objs, names, batch_size=self.batch)
        self.overridden[info.label] += len(objs)

    def match_natural(self, info, batch):
        manager = info.model._default_manager.db_manager(self.using)
        for record in batch:
            nk = record.get("natural_key")
            if not nk:
                raise RestoreError(f"{info.label} pk {record['pk']!r}: record has no natural key")
            try:
                obj = manager.get_by_natural_key(*nk)
            except info.model.DoesNotExist:
                if info.label != "contenttypes.ContentType":
                    raise RestoreError(f"{info.label} {nk!r} does not exist in database {self.using!r}") from None
                obj = manager.create(app_label=nk[0], model=nk[1])
            self.pk_maps[info.label][self.decode_pk(info, record["pk"])] = obj.pk
            self.ref_matched[info.label] += 1

    def queue_updates(self, info, batch):
        for record in batch:
            pk, values, deferred = self.row_values(info, record)
            values.update((info.by_name[name].attname, v) for name, v in deferred.items())
            for attname, value in values.items():
                if attname != info.pk.attname:
                    self.updates[info.label, attname][_hashable(value)].append(pk)

    def apply_deferred(self):
        for (model_label, name), pairs in self.deferred.items():
            model = relations.get_model(model_label)
            f = model._meta.get_field(name)
            by_value = defaultdict(list)
            for pk, value in pairs:
                by_value[value].append(pk)
            if len(by_value) * 4 < len(pairs):
                for value, pks in by_value.items():
                    for i in range(0, len(pks), self.batch):
                        self.qs(model).filter(pk__in=pks[i : i + self.batch]).update(**{f.attname: value})
            else:
                objs = [_instance(model, {model._meta.pk.attname: pk, f.attname: v}) for pk, v in pairs]
                self.qs(model).bulk_update(objs, [f.name], batch_size=self.batch)

    def apply_updates(self):
        for (model_label, attname), by_value in self.updates.items():
            model = relations.get_model(model_label)
            for value, pks in by_value.items():
                for i in range(0, len(pks), self.batch):
                    chunk = pks[i : i + self.batch]
                    n = self.qs(model).filter(pk__in=chunk).update(**{attname: _unhash(value)})
                    self.upd_applied[model_label] += n
                    self.upd_missing[model_label] += len(chunk) - n

    def write_files(self, info, record):
        for name, spec in (record.get("fields") or {}).items():
            f = info.by_name.get(name)
            if not isinstance(f, models.FileField):
                raise RestoreError(f"{info.label} pk {record['pk']!r}: {name!r} is not a file field")
            if spec.get("data") is None:
                continue  # the file was already missing at export time
            data = base64.b64decode(spec["data"])
            storage = self.storage or f.storage
            stored_name = spec["name"]
            if storage.exists(stored_name):
                with storage.open(stored_name, "rb") as fh:
                    if fh.read() == data:
                        continue
                raise RestoreError(
                    f"{info.label} pk {record['pk']!r}: file {stored_name!r} exists in storage with other content"
                )
            saved = storage.save(stored_name, ContentFile(data))
            self.files.append((storage, saved))
            if saved != stored_name:
                pk = self.decode_pk(info, record["pk"])
                self.qs(info.model).filter(pk=pk).update(**{f.attname: saved})

    def reset_sequences(self):
        if not self.touched_models:
            return
        sql = self.connection.ops.sequence_reset_sql(no_style(), sorted(self.touched_models, key=relations.label))
        if sql:
            with self.connection.cursor() as cursor:
                for statement in sql:
                    cursor.execute(statement)


def _group_key(record):
    try:
        return record["model"].lower(), record.get("role", "owned")
    except (TypeError, KeyError, AttributeError):
        raise RestoreError(f"malformed record: {str(record)[:120]}") from None


class _Unhashable:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return hash(repr(self.value))

    def __eq__(self, other):
        return isinstance(other, _Unhashable) and self.value == other.value


def _hashable(value):
    try:
        hash(value)
        return value
    except TypeError:
        return _Unhashable(value)


def _unhash(value):
    return value.value if isinstance(value, _Unhashable) else value


MODES = ("fail", "override")


def restore(records, *, using="default", batch_size=None, storage=None, mode="fail"):
    """Apply `records` (an iterable of record dicts) to database `using`.

    Owned rows must not exist yet (RestoreError names model and keys);
    reference rows are created only when missing; update records put back
    the columns erasure changed. All or nothing: one transaction. With
    mode="override", owned rows that exist are overwritten instead.
    """
    restorer = _Restorer(using, batch_size or conf.get("BATCH_SIZE"), storage, mode)
    try:
        with transaction.atomic(using=using):
            restorer.run(records)
    except Exception:
        remove_files(restorer.files)
        raise
    return RestoreResult(
        inserted=dict(restorer.inserted),
        references_created=dict(restorer.ref_created),
        references_matched=dict(restorer.ref_matched),
        updates_applied=dict(restorer.upd_applied),
        updates_missing={k: v for k, v in restorer.upd_missing.items() if v},
        files_written=tuple(restorer.files),
        overridden=dict(restorer.overridden),
    )


def remove_files(files):
    """Delete files a restore wrote (after the caller rolled it back)."""
    for storage, name in files:
        try:
            storage.delete(name)
        except OSError:
            pass
