"""Engine: apply a stream of records to a database, all or nothing.

Gather, check, execute. When the records can be read twice (a list, or a
callable returning a fresh iterator such as `recovery.open_source`'s
factory) a first pass writes nothing: it checks the schema, the allow-list
and every conflict (primary keys, unique fields, unique_together and
UniqueConstraints) and reports them all, per model with keys and fields,
before the second pass writes a row. A one-shot iterator is checked batch by
batch as it is applied; the first conflict stops the writing, the rest of
the stream is still scanned so the error lists every conflict, and the
transaction is rolled back.

Records arrive model by model in dependency order (see records.Export), so
rows are inserted in multi-row INSERTs as they stream. A nullable FK whose
target model is not complete yet (a self-reference, a cycle) is inserted as
NULL and set afterwards, so the restore works where constraints are checked
per statement (MySQL/MariaDB, PostgreSQL with NOT DEFERRABLE constraints).
Content types are matched by (app_label, model), never by the source
database's id. Sequences end above every restored key.

Receivers of pre_save/post_save see `raw=True`, as with `loaddata`. A
receiver that creates rows anyway (no `raw` check) must not leave
duplicates: rows it creates that collide with rows still to come, or that
depend on a restored row in a model the bundle carries, are deleted; the
bundle's rows win.
"""
import base64
import datetime
import decimal
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain, groupby, repeat
from operator import attrgetter

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.management.color import no_style
from django.db import DataError, IntegrityError, connections, models, transaction
from django.db.models import JSONField, Value
from django.db.models.base import ModelState
from django.db.models.fields import AutoFieldMixin
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import InsertQuery

from . import conf
from .errors import BundleError, RestoreError
from .graph import relations
from .records import decoder, default_deny, model_for_record

MODES = ("fail", "skip-identical", "override", "remap")

# Models a restore never writes, whatever the bundle says: the audit log and
# the bookkeeping of retention itself.
NEVER = ("gestore_retention",)


# -- results and errors ----------------------------------------------------
@dataclass(frozen=True)
class Conflict:
    """One row of the bundle that cannot be written as it is."""

    model: str  # label
    key: object  # pk of the row in the bundle
    kind: str  # "pk" (the key exists with other values) | "identical" | "unique"
    fields: tuple = ()  # field names of a unique constraint, or the fields that differ
    values: tuple = ()  # the bundle's values of those fields
    existing: object = None  # pk of the row already in the database

    def __str__(self):
        if self.kind == "unique":
            pairs = ", ".join(f"{n}={v!r}" for n, v in zip(self.fields, self.values))
            return f"{self.model} pk {self.key!r}: {pairs} already belongs to pk {self.existing!r}"
        if self.kind == "identical":
            return f"{self.model} pk {self.key!r} already exists (identical)"
        diff = ", ".join(self.fields[:5]) + (" ..." if len(self.fields) > 5 else "")
        return f"{self.model} pk {self.key!r} already exists with other values ({diff})"


class ConflictError(RestoreError):
    """Rows of the bundle collide with rows of the database; nothing was written."""


class SchemaDrift(BundleError):
    """The bundle was made with other models than the current ones; nothing was written."""

    def __init__(self, message, drift):
        super().__init__(message)
        self.drift = drift  # [(label, field, "added" | "removed" | "changed" | "model removed", detail)]


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
    skipped: dict = field(default_factory=dict)  # owned rows already present and identical ("skip-identical")
    remapped: dict = field(default_factory=dict)  # owned rows given new keys ("remap")
    receiver_rows_removed: dict = field(default_factory=dict)  # rows receivers made that the bundle replaced
    denied: dict = field(default_factory=dict)  # reference rows not written (field deny-list "*")
    mode: str = "fail"

    @property
    def total(self):
        return sum(self.inserted.values()) + sum(self.references_created.values())

    def labels(self):
        """Every model label the restore touched, sorted."""
        counts = (self.inserted, self.references_created, self.references_matched, self.updates_applied,
                  self.overridden, self.skipped, self.remapped)
        return sorted(set().union(*counts))


# -- model metadata ----------------------------------------------------------
@dataclass
class _ModelInfo:
    model: type
    label: str
    label_lower: str
    fields: list  # insertable fields (local, concrete, not generated)
    decoders: dict  # {field name: decode}
    by_name: dict  # {field name: field}
    pk: object
    pk_parts: tuple  # component fields of a composite pk, else (pk,)
    composite: bool
    auto_pk: bool  # the database assigns keys (AutoField)
    uniques: tuple  # ((field, ...), ...) unique sets without the pk
    gfks: tuple  # ((ct field, fk field), ...)
    fk_targets: dict  # {field name: (related label, holds its pk: may be remapped, nullable: may be set later)}


def _unique_sets(model):
    opts = model._meta
    local = {f.name: f for f in opts.local_concrete_fields}
    sets = []
    for f in opts.local_concrete_fields:
        if f.unique and not f.primary_key:
            sets.append((f,))
    for names in opts.unique_together:
        if all(n in local for n in names):
            sets.append(tuple(local[n] for n in names))
    for c in opts.constraints:
        if isinstance(c, models.UniqueConstraint) and c.fields and not c.condition and not c.expressions:
            if all(n in local for n in c.fields):
                sets.append(tuple(local[n] for n in c.fields))
    return tuple(dict.fromkeys(sets))


def _info(model, cache={}):  # noqa: B006  (per-process cache of immutable metadata)
    if model not in cache:
        fields = [f for _, _, f in relations.local_fields(model)]
        pk = model._meta.pk
        composite = isinstance(pk, models.CompositePrimaryKey) if hasattr(models, "CompositePrimaryKey") else False
        cache[model] = _ModelInfo(
            model=model,
            label=relations.label(model),
            label_lower=model._meta.label_lower,
            fields=fields,
            decoders={f.name: decoder(f) for f in fields},
            by_name={f.name: f for f in fields},
            pk=pk,
            pk_parts=tuple(pk.fields) if composite else (pk,),
            composite=composite,
            auto_pk=isinstance(pk, AutoFieldMixin),
            uniques=_unique_sets(model),
            gfks=tuple((ct, fk) for _, ct, fk in relations.generic_foreign_keys(model)),
            fk_targets={f.name: (relations.label(f.related_model), f.target_field.primary_key,
                                 f.null and not f.primary_key) for f in fields if f.is_relation},
        )
    return cache[model]


def _instance(model, values, using=None):
    obj = model.__new__(model)
    obj._state = ModelState()
    obj._state.db = using
    obj.__dict__.update(values)
    return obj


def _norm(value):
    return bytes(value) if isinstance(value, memoryview) else value


def _label_of(label_lower):
    return relations.label(relations.get_model(label_lower))


# -- the restorer --------------------------------------------------------------
class _Restorer:
    def __init__(self, using, batch_size, storage, mode="fail", allow=None, deny=None, signals=True):
        if mode not in MODES:
            raise RestoreError(f"unknown restore mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.using = using
        self.batch = batch_size
        self.storage = storage
        self.allow = None if allow is None else {a.lower() for a in allow}
        self.deny = default_deny() if deny is None else {k.lower(): v for k, v in deny.items()}
        self.signals = signals
        self.connection = connections[using]
        self.pk_maps = defaultdict(dict)  # {label: {source pk: target pk}}
        self.done = set()  # labels whose rows are all inserted
        self.owned_labels = set()  # labels with owned records (their keys change in "remap")
        self.deferred = defaultdict(list)  # {(label, field name): [(pk, value)]}
        self.gfk_fixups = []  # [(label, pk, ct attname, fk attname)] GFKs whose target came later ("remap")
        self.updates = defaultdict(lambda: defaultdict(list))  # {(label, attname): {value: [pk]}}
        self.differing = {}  # {(label, pk): (field name, ...)} existing rows that differ from the bundle
        self.unique_matches = {}  # {label: {bundle pk: existing pk}} references found by a unique value
        self.content_types = {}  # {content type id here: model or None}
        self.conflicts = []  # [Conflict]
        self.writing = True
        self.fields_seen = {}  # {label_lower: set(field name)} (for the schema report)
        self.spawned = defaultdict(set)  # {label: {pk}} rows receivers created during the restore
        self.dispatched = defaultdict(set)  # {label: {pk}} rows whose post_save receivers ran
        self.counts = {name: defaultdict(int) for name in (
            "inserted", "ref_created", "ref_matched", "upd_applied", "upd_missing", "overridden", "skipped",
            "remapped", "spawn_removed", "denied")}
        self.touched_models = set()
        self.files = []
        self.records_done = 0
        self.progress = None
        self.total_records = None

    def reset(self, total):
        """Forget what the checking pass counted and mapped; keep what it learnt (the total)."""
        self.total_records, self.records_done = total, 0
        self.pk_maps = defaultdict(dict)
        self.owned_labels = set()
        self.unique_matches = {}
        self.differing = {}
        self.counts = {name: defaultdict(int) for name in self.counts}

    def qs(self, model):
        return model._base_manager.using(self.using)

    # -- passes ----------------------------------------------------------
    def run(self, records, *, write):
        """Go through `records` once; write only if `write` (else only check)."""
        self.writing = write
        self.done = set()
        current = None
        for (label_lower, role), group in groupby(records, key=_group_key):
            if label_lower != current:
                if current is not None:
                    self.done.add(_label_of(current))
                current = label_lower
            batch = []
            for record in group:
                batch.append(record)
                if len(batch) >= self.batch:
                    self.flush(batch, role)
                    batch = []
            if batch:
                self.flush(batch, role)
        if self.writing:
            self.apply_deferred()
            self.apply_gfk_fixups()
            self.apply_updates()
            self.remove_spawned_dependents()
            self.reset_sequences()

    def check_conflicts(self):
        if not self.conflicts:
            return
        by_model = defaultdict(list)
        for c in self.conflicts:
            by_model[c.model].append(c)
        parts = []
        for label, cs in sorted(by_model.items()):
            shown = "; ".join(str(c) for c in cs[:5]) + (f"; and {len(cs) - 5} more" if len(cs) > 5 else "")
            parts.append(f"{label}: {len(cs)} conflict(s): {shown}")
        raise ConflictError(
            f"{len(self.conflicts)} row(s) of the bundle conflict with rows that already exist "
            f"(mode {self.mode!r}); nothing was restored. " + " | ".join(parts),
            conflicts=list(self.conflicts),
        )

    def conflict(self, c):
        self.conflicts.append(c)
        if self.writing:
            self.writing = False  # stop writing; scan on to report every conflict

    def flush(self, batch, role):
        model = model_for_record(batch[0])
        info = _info(model)
        if self.allow is not None and info.label_lower not in self.allow and model._meta.app_label not in self.allow:
            raise RestoreError(f"{info.label}: not in the allowed models of this restore; nothing was restored")
        if model._meta.app_label in NEVER:
            raise RestoreError(f"{info.label}: a restore never writes this model; nothing was restored")
        if role not in ("file", "update"):
            self.fields_seen.setdefault(info.label_lower, set(batch[0].get("fields") or {}))
        if role == "owned":
            self.owned_labels.add(info.label)
        if role == "update":
            self.queue_updates(info, batch)
        elif role == "file":
            if self.writing:
                for record in batch:
                    self.write_files(info, record)
        elif relations.is_natural_key_model(model):
            self.match_natural(info, batch)
        elif role in ("owned", "reference"):
            self.rows(info, batch, role)
        else:
            raise RestoreError(f"{info.label} pk {batch[0].get('pk')!r}: unknown record role {role!r}")
        self.records_done += len(batch)
        if self.progress is not None and self.writing:
            self.progress(self.records_done, self.total_records)

    # -- decoding ----------------------------------------------------------
    def decode_pk(self, info, value):
        try:
            if info.composite:
                if not isinstance(value, (list, tuple)) or len(value) != len(info.pk_parts):
                    raise ValueError(f"expected a list of {len(info.pk_parts)} values")
                return tuple(self.map_fk(f, decoder(f)(v)) if f.is_relation else decoder(f)(v)
                             for f, v in zip(info.pk_parts, value))
            if info.pk.is_relation:
                return decoder(info.pk)(value)
            return info.pk.to_python(value)
        except Exception as exc:
            raise RestoreError(f"{info.label}: bad primary key {value!r}: {exc}") from None

    def map_fk(self, f, value):
        if value is None or not f.target_field.primary_key:
            return value  # a to_field FK names a unique column, which keeps its value
        m = self.pk_maps.get(relations.label(f.related_model))
        return m.get(value, value) if m else value

    def row_values(self, info, record, complete=True):
        """Return (source pk, target pk, {attname: value}, {field name: deferred FK value})."""
        src = self.decode_pk(info, record["pk"])
        pk = src
        if info.pk.is_relation and not info.composite:
            pk = self.map_fk(info.pk, src)  # a multi-table child follows its parent's key
        values = {} if info.composite else {info.pk.attname: pk}
        deferred = {}
        fields = record.get("fields") or {}
        if not fields.keys() <= info.by_name.keys():
            unknown = set(fields) - set(info.by_name)
            raise RestoreError(f"{info.label} pk {record['pk']!r}: unknown field(s) {', '.join(sorted(unknown))}")
        for name, raw in fields.items():
            f = info.by_name[name]
            if f is info.pk:
                continue
            try:
                value = None if raw is None else info.decoders[name](raw)
            except Exception as exc:
                raise RestoreError(f"{info.label} pk {record['pk']!r}: field {name!r}: bad value {raw!r}: {exc}") from None
            if value is not None and name in info.fk_targets:
                target, to_pk, deferrable = info.fk_targets[name]
                if to_pk and target in self.pk_maps:  # map_fk(), without looking up the target per value
                    value = self.pk_maps[target].get(value, value)
                if deferrable and (target not in self.done or target == info.label):
                    deferred[name] = value
                    value = None
            values[f.attname] = value
        if complete and len(values) + len(deferred) < len(info.fields):
            for f in info.fields:  # a field added since the bundle was made (allowed drift)
                if f.attname not in values and f.name not in deferred:
                    values[f.attname] = f.get_default()
        for ct_field, fk_field in info.gfks:
            self.map_gfk(info, src, values, deferred, ct_field, fk_field)
        return src, pk, values, deferred

    def map_gfk(self, info, src, values, deferred, ct_field, fk_field):
        ct_id = values.get(ct_field.attname, deferred.get(ct_field.name))
        object_id = values.get(fk_field.attname)
        if ct_id is None or object_id is None:
            return
        target = self.ct_model(ct_id)
        if target is None:
            return
        target_label = relations.label(target)
        if self.mode == "remap" and target_label not in self.done and self.writing:
            self.gfk_fixups.append((info.label, src, ct_field.attname, fk_field.attname))
            return
        m = self.pk_maps.get(target_label)
        if m:
            try:
                key = target._meta.pk.to_python(object_id)
            except Exception:
                return
            if key in m:
                new = m[key]
                values[fk_field.attname] = str(new) if isinstance(object_id, str) else new

    def ct_model(self, ct_id):
        """Return the model of content type `ct_id` here (read once per restore, not from the global cache)."""
        if ct_id not in self.content_types:
            from django.contrib.contenttypes.models import ContentType

            row = ContentType.objects.db_manager(self.using).filter(pk=ct_id).values_list("app_label", "model").first()
            model = None
            if row is not None:
                try:
                    model = relations.get_model(".".join(row))
                except Exception:
                    model = None
            self.content_types[ct_id] = model
        return self.content_types[ct_id]

    # -- owned and reference rows -----------------------------------------
    def rows(self, info, batch, role):
        rows = [self.row_values(info, r) for r in batch]
        remap = role == "owned" and self.mode == "remap"
        self.remove_spawned_collisions(info, rows)
        existing = {} if remap and self.remappable(info) else self.existing_rows(info, rows)
        to_insert, to_override = [], []
        for src, pk, values, deferred in rows:
            state = existing.get(pk)
            if role == "reference":
                if state is not None:
                    self.counts["ref_matched"][info.label] += 1
                    continue
                if self.deny.get(info.label_lower, {}).get("*", 0) is None:
                    self.counts["denied"][info.label] += 1
                    continue
                to_insert.append((src, pk, values, deferred))
                continue
            if state is None:
                to_insert.append((src, pk, values, deferred))
            elif self.mode == "override":
                to_override.append((src, pk, values, deferred))
            elif self.mode == "skip-identical" and state == "identical":
                self.counts["skipped"][info.label] += 1
            else:
                self.conflict(Conflict(info.label, src, state if state == "identical" else "pk",
                                       tuple(self.differing.get((info.label, pk), ())), existing=pk))
        self.check_unique(info, to_insert + to_override, role)
        if role == "reference":
            to_insert = self.match_references(info, to_insert)
        if not self.writing:
            return
        self.apply_json_null(info, batch, rows)
        if to_override:
            self.override(info, to_override)
        if to_insert:
            self.insert(info, to_insert, role, remap)

    def apply_json_null(self, info, batch, rows):
        """Write JSON null, not SQL NULL, where a record lists the field in "json_null"."""
        for record, (_, _, values, _) in zip(batch, rows):
            for name in record.get("json_null") or ():
                f = info.by_name.get(name)
                if f is None or f.get_internal_type() != "JSONField" or values.get(f.attname) is not None:
                    raise RestoreError(f"{info.label} pk {record['pk']!r}: json_null names {name!r}, "
                                       "which is not a JSON field holding null")
                values[f.attname] = Value(None, JSONField())

    def remappable(self, info):
        return info.auto_pk or info.pk.is_relation or info.composite or info.pk.has_default()

    def existing_rows(self, info, rows):
        """Return {pk: "identical" | "differs"} for the rows' keys that exist here."""
        pks = [pk for _, pk, _, _ in rows]
        attnames = [f.attname for f in info.fields if f is not info.pk]
        by_pk = {pk: (values, deferred) for _, pk, values, deferred in rows}
        out = {}
        qs = self.qs(info.model)
        if all(type(pk) is int for pk in pks) and max(pks) - min(pks) < 2 * len(pks):  # noqa: E721
            # Keys that fill half their span are read as one range, as records._selects
            # does: far cheaper than an IN list of a thousand parameters.
            qs = qs.filter(pk__gte=min(pks), pk__lte=max(pks))
        else:
            qs = qs.filter(pk__in=pks)
        for row in qs.values_list("pk", *attnames):
            pk = tuple(row[0]) if info.composite else row[0]
            if pk not in by_pk:
                continue  # in the range, not in the batch
            values, deferred = by_pk[pk]
            merged = dict(values)
            merged.update((info.by_name[n].attname, v) for n, v in deferred.items())
            differs = tuple(
                f.name for f, v in zip((f for f in info.fields if f is not info.pk), row[1:])
                if f.attname in merged and _norm(v) != _norm(merged[f.attname])
            )
            out[pk] = "differs" if differs else "identical"
            if differs:
                self.differing[info.label, pk] = differs
        return out

    def check_unique(self, info, rows, role):
        """Report rows whose unique values belong to another row here."""
        if not info.uniques or not rows:
            return
        for fields in info.uniques:
            if self.mode == "remap" and role == "owned" and any(
                f.is_relation and relations.label(f.related_model) in self.owned_labels for f in fields
            ):
                continue  # those values are new keys: they cannot collide
            wanted = {}  # {(value, ...): target pk}
            for _, pk, values, deferred in rows:
                key = tuple(_unique_value(info, f, values, deferred) for f in fields)
                if None not in key:
                    wanted[key] = pk
            if not wanted:
                continue
            # Remapped rows get new keys: an existing row holding the value is
            # another row even when its key equals the bundle's.
            new_keys = self.mode == "remap" and role == "owned" and self.remappable(info)
            first = fields[0].attname
            qs = self.qs(info.model).filter(**{f"{first}__in": {k[0] for k in wanted}})
            for row in qs.values_list("pk", *(f.attname for f in fields)):
                key = tuple(_norm(v) for v in row[1:])
                existing_pk = tuple(row[0]) if info.composite else row[0]
                if key in wanted and (new_keys or wanted[key] != existing_pk):
                    if role == "reference":
                        self.unique_matches.setdefault(info.label, {})[wanted[key]] = existing_pk
                        continue
                    self.conflict(Conflict(info.label, wanted[key], "unique", tuple(f.name for f in fields),
                                           key, existing=existing_pk))

    def match_references(self, info, rows):
        """Match missing reference rows to existing rows by a unique key (natural key)."""
        found = self.unique_matches.pop(info.label, None)
        if not found:
            return rows
        keep = []
        for row in rows:
            if row[1] in found:
                self.pk_maps[info.label][row[0]] = found[row[1]]
                self.counts["ref_matched"][info.label] += 1
            else:
                keep.append(row)
        return keep

    def insert(self, info, rows, role, remap):
        deny = self.deny.get(info.label_lower) if role == "reference" else None
        objs, sources = [], []
        for src, pk, values, deferred in rows:
            if deny:
                for name, safe in deny.items():
                    values[info.by_name[name].attname] = safe() if callable(safe) else safe
            objs.append(_instance(info.model, values, self.using))
            sources.append((src, deferred))
        fields = info.fields
        assign = remap and info.auto_pk
        if remap and not info.auto_pk and not info.pk.is_relation and not info.composite and info.pk.has_default():
            for obj, (src, _) in zip(objs, sources):
                new = info.pk.get_default()
                setattr(obj, info.pk.attname, new)
                self.pk_maps[info.label][src] = new
        if assign:
            fields = [f for f in fields if f is not info.pk]
        self.send(pre_save, info, objs)
        if assign:
            self.insert_returning(info, fields, objs)
        elif not _plain_insert(self.connection, info.model, fields, objs):
            size = max(1, min(self.batch, self.connection.ops.bulk_batch_size(fields, objs)))
            for i in range(0, len(objs), size):
                info.model._base_manager._insert(objs[i : i + size], fields=fields, raw=True, using=self.using)
        for obj, (src, deferred) in zip(objs, sources):
            pk = obj.pk if not info.composite else tuple(getattr(obj, f.attname) for f in info.pk_parts)
            if remap:
                if pk != src:
                    self.pk_maps[info.label][src] = pk
                self.counts["remapped"][info.label] += 1
            for name, value in deferred.items():
                self.deferred[info.label, name].append((pk, value))
        self.counts["inserted" if role == "owned" else "ref_created"][info.label] += len(objs)
        self.touched_models.add(info.model)
        self.send(post_save, info, objs)

    def insert_returning(self, info, fields, objs):
        """Insert objs without their keys and set the keys the database gave them."""
        size = max(1, min(self.batch, self.connection.ops.bulk_batch_size(fields, objs)))
        for i in range(0, len(objs), size):
            chunk = objs[i : i + size]
            returned = info.model._base_manager._insert(
                chunk, fields=fields, returning_fields=[info.pk], raw=True, using=self.using
            )
            if len(returned) != len(chunk):
                raise RestoreError(f"{info.label}: the database did not return the new keys")
            for obj, (new,) in zip(chunk, returned):
                setattr(obj, info.pk.attname, new)

    def override(self, info, rows):
        """Overwrite existing rows with the bundle's values (mode "override")."""
        names = [f.name for f in info.fields if f is not info.pk and not (info.composite and f in info.pk_parts)]
        objs = []
        for _, pk, values, deferred in rows:
            objs.append(_instance(info.model, values, self.using))
            for name, value in deferred.items():
                self.deferred[info.label, name].append((pk, value))
        if names:
            self.qs(info.model).bulk_update(objs, names, batch_size=self.batch)
        self.counts["overridden"][info.label] += len(objs)

    def match_natural(self, info, batch):
        manager = info.model._default_manager.db_manager(self.using)
        for record in batch:
            nk = record.get("natural_key")
            if not nk:
                raise RestoreError(f"{info.label} pk {record['pk']!r}: record has no natural key")
            try:
                if info.label == "contenttypes.ContentType":  # not through the manager's cache
                    obj = manager.get(app_label=nk[0], model=nk[1])
                else:
                    obj = manager.get_by_natural_key(*nk)
            except info.model.DoesNotExist:
                if info.label != "contenttypes.ContentType":
                    raise RestoreError(f"{info.label} {nk!r} does not exist in database {self.using!r}") from None
                if not self.writing:
                    continue
                obj = manager.create(app_label=nk[0], model=nk[1])
            self.pk_maps[info.label][self.decode_pk(info, record["pk"])] = obj.pk
            self.counts["ref_matched"][info.label] += 1

    # -- receivers -----------------------------------------------------------
    def send(self, signal, info, objs):
        """Send `signal` with raw=True for each object, as loaddata does; track rows receivers make."""
        if not self.signals or not signal.has_listeners(info.model):
            return
        made = defaultdict(set)  # {label: {pk}}

        def track(sender, instance, created=False, raw=False, using=None, **kwargs):
            if created and not raw and using == self.using:
                made[relations.label(sender)].add(instance.pk)

        uid = f"gestore-restore-{uuid.uuid4().hex}"
        if signal is post_save:
            post_save.connect(track, weak=False, dispatch_uid=uid)
        try:
            for obj in objs:
                kwargs = {"created": True, "update_fields": None} if signal is post_save else {"update_fields": None}
                try:
                    with transaction.atomic(using=self.using):
                        signal.send(sender=info.model, instance=obj, raw=True, using=self.using, **kwargs)
                except IntegrityError:
                    # A receiver tried to create a row the bundle already restored: the
                    # bundle's row stands (what raw=True means).
                    continue
                if signal is post_save:
                    self.dispatched[info.label].add(obj.pk)
        finally:
            if signal is post_save:
                post_save.disconnect(dispatch_uid=uid)
        for label, pks in made.items():
            self.spawned[label] |= pks

    def remove_spawned_collisions(self, info, rows):
        """Delete rows receivers created that hold a key or unique value of rows about to be written."""
        spawned = self.spawned.get(info.label)
        if not spawned or not self.writing:
            return
        pks = {pk for _, pk, _, _ in rows}
        doomed = {pk for pk in spawned if pk in pks}
        for fields in info.uniques:
            wanted = {tuple(_unique_value(info, f, v, d) for f in fields) for _, _, v, d in rows}
            for row in self.qs(info.model).filter(pk__in=spawned).values_list("pk", *(f.attname for f in fields)):
                if tuple(_norm(v) for v in row[1:]) in wanted:
                    doomed.add(row[0])
        if doomed:
            self.delete_spawned(info.model, doomed)

    def remove_spawned_dependents(self):
        """Delete rows receivers created that depend on restored rows, in models the bundle carries."""
        for label, pks in list(self.spawned.items()):
            if not pks or label.lower() not in self.fields_seen:
                continue
            model = relations.get_model(label)
            for f in relations.forward_fks(model):
                targets = self.dispatched.get(relations.label(f.related_model))
                if not targets:
                    continue
                rows = self.qs(model).filter(pk__in=pks).values_list("pk", f.attname)
                doomed = {pk for pk, value in rows if value in targets}
                if doomed:
                    self.delete_spawned(model, doomed)
                    pks = self.spawned[label]

    def delete_spawned(self, model, pks):
        label = relations.label(model)
        self.qs(model).filter(pk__in=list(pks)).delete()
        self.spawned[label] -= set(pks)
        self.counts["spawn_removed"][label] += len(pks)

    # -- after the rows ------------------------------------------------------
    def queue_updates(self, info, batch):
        deny = self.deny.get(info.label_lower, {})
        for record in batch:
            _, pk, values, deferred = self.row_values(info, record, complete=False)
            pk = self.pk_maps.get(info.label, {}).get(pk, pk)
            values.update((info.by_name[name].attname, v) for name, v in deferred.items())
            for attname, value in values.items():
                if attname != info.pk.attname and attname not in deny and "*" not in deny:
                    self.updates[info.label, attname][_hashable(value)].append(pk)

    def apply_deferred(self):
        for (model_label, name), pairs in self.deferred.items():
            model = relations.get_model(model_label)
            f = model._meta.get_field(name)
            m = self.pk_maps.get(relations.label(f.related_model))
            if m:  # keys inserted after this row may have been remapped
                pairs = [(pk, m.get(v, v)) for pk, v in pairs]
            by_value = defaultdict(list)
            for pk, value in pairs:
                by_value[value].append(pk)
            if len(by_value) * 4 < len(pairs) or _info(model).composite:
                for value, pks in by_value.items():
                    for i in range(0, len(pks), self.batch):
                        self.qs(model).filter(pk__in=pks[i : i + self.batch]).update(**{f.attname: value})
            else:
                objs = [_instance(model, {model._meta.pk.attname: pk, f.attname: v}) for pk, v in pairs]
                self.qs(model).bulk_update(objs, [f.name], batch_size=self.batch)

    def apply_gfk_fixups(self):
        for model_label, src, ct_attname, fk_attname in self.gfk_fixups:
            model = relations.get_model(model_label)
            pk = self.pk_maps.get(model_label, {}).get(src, src)
            row = self.qs(model).filter(pk=pk).values_list(ct_attname, fk_attname).first()
            if row is None:
                continue
            target = self.ct_model(row[0])
            m = self.pk_maps.get(relations.label(target)) if target is not None else None
            if not m:
                continue
            key = target._meta.pk.to_python(row[1])
            if key in m:
                new = str(m[key]) if isinstance(row[1], str) else m[key]
                self.qs(model).filter(pk=pk).update(**{fk_attname: new})

    def apply_updates(self):
        for (model_label, attname), by_value in self.updates.items():
            model = relations.get_model(model_label)
            qs = self.qs(model)
            if self.mode == "remap":
                # The rows erasure changed may point at the original again (it was not
                # erased): put the column back only where it still holds what erasure left.
                f = next(f for f in model._meta.concrete_fields if f.attname == attname)
                left = models.Q(**{f"{attname}__isnull": True})
                if f.has_default() and f.get_default() is not None:
                    left |= models.Q(**{attname: f.get_default()})
                qs = qs.filter(left)
            for value, pks in by_value.items():
                for i in range(0, len(pks), self.batch):
                    chunk = pks[i : i + self.batch]
                    n = qs.filter(pk__in=chunk).update(**{attname: _unhash(value)})
                    self.counts["upd_applied"][model_label] += n
                    self.counts["upd_missing"][model_label] += len(chunk) - n

    def write_files(self, info, record):
        for name, spec in (record.get("fields") or {}).items():
            f = info.by_name.get(name)
            where = f"{info.label} pk {record['pk']!r}"
            if not isinstance(f, models.FileField):
                raise RestoreError(f"{where}: {name!r} is not a file field")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise RestoreError(f"{where}: file record for {name!r} needs a stored name")
            if spec.get("data") is None:
                continue  # the file was already missing at export time
            try:
                data = base64.b64decode(spec["data"], validate=True)
            except (TypeError, ValueError):
                raise RestoreError(f"{where}: file {spec['name']!r}: its data is not base64") from None
            storage = self.storage or f.storage
            stored_name = spec["name"]
            try:
                if storage.exists(stored_name):
                    with storage.open(stored_name, "rb") as fh:
                        if fh.read() == data:
                            continue
                    raise RestoreError(f"{where}: file {stored_name!r} exists in storage with other content")
                saved = storage.save(stored_name, ContentFile(data))
            except SuspiciousFileOperation:
                raise RestoreError(f"{where}: file name {stored_name!r} points outside the storage") from None
            self.files.append((storage, saved))
            if saved != stored_name:
                pk = self.decode_pk(info, record["pk"])
                pk = self.pk_maps.get(info.label, {}).get(pk, pk)
                self.qs(info.model).filter(pk=pk).update(**{f.attname: saved})

    def check_references(self):
        """Check the restored rows' foreign keys now, in the restore's transaction.

        SQLite and PostgreSQL check them only at commit (Django declares them
        deferred): a dangling reference would pass a dry run, which never
        commits, and fail the real restore at its end. SQLite's check
        (`PRAGMA foreign_key_check`) reads each restored table once, indexed;
        MySQL/MariaDB checked every row as it was written.
        """
        if self.connection.vendor in ("sqlite", "postgresql") and self.touched_models:
            self.connection.check_constraints(table_names=sorted({m._meta.db_table for m in self.touched_models}))

    def reset_sequences(self):
        if not self.touched_models:
            return
        sql = self.connection.ops.sequence_reset_sql(no_style(), sorted(self.touched_models, key=relations.label))
        if sql:
            with self.connection.cursor() as cursor:
                for statement in sql:
                    cursor.execute(statement)

    def result(self):
        c = self.counts
        return RestoreResult(
            inserted=dict(c["inserted"]),
            references_created=dict(c["ref_created"]),
            references_matched=dict(c["ref_matched"]),
            updates_applied=dict(c["upd_applied"]),
            updates_missing={k: v for k, v in c["upd_missing"].items() if v},
            overridden=dict(c["overridden"]),
            files_written=tuple(self.files),
            skipped=dict(c["skipped"]),
            remapped=dict(c["remapped"]),
            receiver_rows_removed=dict(c["spawn_removed"]),
            denied=dict(c["denied"]),
            mode=self.mode,
        )


# Where Django's insert compiler sends plain values as one multi-row
# INSERT ... VALUES (%s, ...), ... per batch, the statement _plain_insert builds.
# On PostgreSQL it sends INSERT ... SELECT * FROM UNNEST(...), so it keeps it.
PLAIN_INSERT_VENDORS = ("sqlite", "mysql")

# Types that are never expressions (no resolve_expression() or as_sql()).
PLAIN_TYPES = frozenset((type(None), bool, int, float, str, bytes, memoryview, decimal.Decimal, datetime.date,
                         datetime.datetime, datetime.time, datetime.timedelta, uuid.UUID, dict, list))


def _plain_insert(connection, model, fields, objs):
    """Insert `objs` as `model._base_manager._insert(objs, fields, raw=True)` would; return False if not done.

    Django's insert compiler, with raw=True, takes each value as it is on the
    object (no pre_save(): auto_now keeps the bundle's value), passes it
    through its field's get_db_prep_save() and gives it the placeholder "%s"
    unless it is an expression or its field has a get_placeholder() of its
    own. This sends the same statements with the same parameters, but builds
    the SQL once and prepares the values a column at a time, where Django
    compiles every value on its own. When a value before or after
    get_db_prep_save() is not of a plain type (an expression such as a JSON
    null or a db_default, or any other object), or a field's placeholder is
    not "%s" (BinaryField on MySQL), nothing is written here: Django does it.
    """
    if connection.vendor not in PLAIN_INSERT_VENDORS or not fields or not objs:
        return False
    columns = []  # [[value of one field for each obj]]
    for f in fields:
        column = list(map(attrgetter(f.attname), objs))
        if not set(map(type, column)) <= PLAIN_TYPES:
            return False
        if not _prepared_already(f, column):
            column = list(map(f.get_db_prep_save, column, repeat(connection)))
        if not set(map(type, column)) <= PLAIN_TYPES:
            return False
        if hasattr(f, "get_placeholder"):
            compiler = InsertQuery(model).get_compiler(connection=connection)
            if any(f.get_placeholder(v, compiler, connection) != "%s" for v in column):
                return False
        columns.append(column)
    ops, qn = connection.ops, connection.ops.quote_name
    head = "%s %s (%s) " % (ops.insert_statement(), qn(model._meta.db_table), ", ".join(qn(f.column) for f in fields))
    rows = list(zip(*columns))
    size = max(1, ops.bulk_batch_size(fields, objs))
    with connection.cursor() as cursor:
        for i in range(0, len(rows), size):
            chunk = rows[i : i + size]
            if i == 0 or len(chunk) < size:
                sql = head + ops.bulk_insert_sql(fields, [["%s"] * len(fields)] * len(chunk))
            cursor.execute(sql, tuple(chain.from_iterable(chunk)))
    return True


# Django's own fields whose get_db_prep_save() returns an int or a str as it is (SQLite, MySQL).
_AS_IS = {int: (models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
                models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
                models.PositiveBigIntegerField, models.PositiveSmallIntegerField),
          str: (models.CharField, models.TextField, models.SlugField, models.EmailField, models.URLField)}


def _prepared_already(f, column):
    """True when get_db_prep_save() would give back every value of `column` unchanged (skip it: per value).

    Only for Django's own integer and text fields (and foreign keys to
    them), exactly those classes, holding values of exactly that type or None.
    """
    target = f.target_field if f.is_relation and type(f) is models.ForeignKey else f
    for kind, classes in _AS_IS.items():
        if type(target) in classes:
            return set(map(type, column)) <= {kind, type(None)}
    return False


def _unique_value(info, f, values, deferred):
    if f.name in deferred:
        return deferred[f.name]
    return _norm(values.get(f.attname))


def _group_key(record):
    try:
        key = record["model"].lower(), record.get("role", "owned")
        if "pk" in record and isinstance(record["fields"], dict):
            return key
    except (TypeError, KeyError, AttributeError):
        pass
    if isinstance(record, dict) and isinstance(record.get("model"), str):
        model_for_record(record)  # an unknown model says so first
    raise BundleError(f"malformed record (a record has a model, a pk and a fields object): {str(record)[:120]}")


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


# -- schema ----------------------------------------------------------------------
def schema_fields(labels):
    """Return {label_lower: {field name: "InternalType" or "InternalType null"}} (bundle metadata)."""
    out = {}
    for lb in sorted(labels):
        model = relations.get_model(lb)
        out[model._meta.label_lower] = {
            name: f.get_internal_type() + (" null" if f.null else "") for name, _, f in relations.local_fields(model)
        }
    return out


def schema_drift(schema, fields=None, seen=None):
    """Compare a bundle's schema with the current models.

    `schema` is the bundle's {label_lower: fingerprint}; `fields` its
    {label_lower: {name: type}} when the bundle has it; `seen` the field names
    its records carry per model (used when `fields` is absent). Return
    [(label, field, change, detail)] with change "added", "removed",
    "changed" or "model removed". This is a read-only operation.
    """
    drift = []
    for lb, fingerprint in sorted((schema or {}).items()):
        try:
            model = relations.get_model(lb)
        except Exception:
            drift.append((lb, "", "model removed", "the model does not exist here"))
            continue
        if relations.schema_fingerprint(model) == fingerprint:
            continue
        current = schema_fields([lb])[model._meta.label_lower]
        before = (fields or {}).get(lb)
        found = []
        if before is not None:
            for name in sorted(set(before) | set(current)):
                if name not in before:
                    found.append((lb, name, "added", current[name]))
                elif name not in current:
                    found.append((lb, name, "removed", before[name]))
                elif before[name] != current[name]:
                    found.append((lb, name, "changed", f"{before[name]} -> {current[name]}"))
        elif seen and lb in seen:
            pk = model._meta.pk.name
            for name in sorted(set(seen[lb]) | set(current)):
                if name == pk:
                    continue
                if name not in seen[lb]:
                    found.append((lb, name, "added", current[name]))
                elif name not in current:
                    found.append((lb, name, "removed", "in the bundle"))
        if not found:
            found.append((lb, "", "changed", "column types or nullability differ (the bundle carries no field list)"))
        drift.extend(found)
    return drift


def _additive(drift):
    for lb, name, change, _ in drift:
        if change != "added":
            return False
        f = relations.get_model(lb)._meta.get_field(name)
        if not (f.null or f.has_default() or getattr(f, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED):
            return False
    return True


def _check_schema(schema, fields, seen, allow_additive):
    drift = schema_drift(schema, fields, seen)
    if not drift or (allow_additive and _additive(drift)):
        return drift
    lines = "; ".join(f"{lb}.{name or '*'} {change} ({detail})" for lb, name, change, detail in drift[:20])
    hint = " (only added nullable or defaulted fields may be allowed, with the option to accept additive changes)"
    raise SchemaDrift(f"bundle schema differs from the current models: {lines}; nothing was restored" + hint, drift)


# -- entry point ---------------------------------------------------------------------
def restore(records, *, using="default", batch_size=None, storage=None, mode="fail", models_allowed=None,
            deny=None, schema=None, schema_fields=None, allow_additive=False, signals=True, progress=None,
            before_write=None):
    """Apply `records` to database `using`, all or nothing, and return a RestoreResult.

    `records` is a list of record dicts, an iterator, or a callable returning
    a fresh iterator of the same records each time; with a list or a callable
    everything is checked before anything is written. Modes: "fail" (any
    owned row that exists already is a conflict), "skip-identical" (existing
    identical owned rows are left alone), "override" (existing owned rows are
    overwritten), "remap" (owned rows get new keys; references to them are
    rewritten). Unique values taken by other rows are conflicts in every
    mode. Reference rows are matched by key, natural key or unique value and
    created only when missing, with denied fields (see `default_deny`) set to
    safe values. `models_allowed` limits the models (labels or app labels).
    With `schema` (the bundle's fingerprints) drift is refused unless it only
    adds nullable or defaulted fields and `allow_additive` is true.
    `progress(done, total)` is called after each batch. `before_write()`, a
    last check of the caller's, runs after the schema and conflict checks and
    before the first row is written; what it raises aborts the restore.
    """
    restorer = _Restorer(using, batch_size or conf.get("BATCH_SIZE"), storage, mode,
                         allow=models_allowed, deny=deny, signals=signals)
    restorer.progress = progress
    if callable(records):
        factory = records
    elif isinstance(records, (list, tuple)):
        factory = lambda: iter(records)  # noqa: E731
    else:
        factory = None
    try:
        with transaction.atomic(using=using):
            if factory is not None:
                restorer.run(factory(), write=False)
                if schema is not None:
                    _check_schema(schema, schema_fields, restorer.fields_seen, allow_additive)
                restorer.check_conflicts()
                restorer.reset(total=restorer.records_done)
                records = factory()
            elif schema is not None:
                _check_schema(schema, schema_fields, None, allow_additive)
            if before_write is not None:
                before_write()
            restorer.run(records, write=True)
            restorer.check_conflicts()
            restorer.check_references()
    except (IntegrityError, DataError) as exc:
        remove_files(restorer.files)
        message = " ".join(str(exc).split())  # a driver's message can span lines
        raise RestoreError(f"the database refused the restored rows: {message}; nothing was restored") from None
    except Exception:
        remove_files(restorer.files)
        raise
    return restorer.result()


def remove_files(files):
    """Delete files a restore wrote (after the caller rolled it back)."""
    for storage, name in files:
        try:
            storage.delete(name)
        except OSError:
            pass
