"""Engine: walk a subject's object graph into a frozen Plan, in batches.

One query per (model, relation, frontier chunk), never one per object. The
walk mirrors what Django's deletion Collector would do to the subject:

* owned: rows the Collector deletes (CASCADE, M2M link rows, generic
  relations, multi-table parents and children);
* updates: rows outside the owned set it modifies (SET_NULL, SET_DEFAULT,
  SET(...)), exported with their old values;
* references: the forward dependency closure of owned rows (FK, O2O,
  GenericForeignKey targets), exported so a restore into an empty database
  works, never deleted;
* boundary: rows of a model the scope forbids, reached by the walk and
  recorded as keys only.

The Plan is consumed by preview, export, erase and verification alike.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType

from django.contrib.contenttypes.models import ContentType
from django.db import models

from .. import conf
from ..errors import ObjectSpecError
from . import relations


@dataclass(frozen=True)
class Scope:
    """What the walk may cross. A policy's [scope] table fills one of these."""

    boundaries: frozenset = frozenset()  # {model label}: never walked into beyond the subjects
    include_files: bool = True  # put stored files' bytes into the bundle

    @classmethod
    def of(cls, boundaries=(), include_files=True):
        labels = frozenset(relations.label(relations.get_model(b)) for b in boundaries)
        return cls(boundaries=labels, include_files=include_files)


@dataclass(frozen=True)
class Blocker:
    """A relation that stops erasure: PROTECT, RESTRICT, or a cascade into a boundary."""

    kind: str  # "protect" | "restrict" | "boundary"
    model: str  # label of the blocking rows' model
    field: str  # the FK on `model` that points into the owned set ("" for boundary)
    pks: tuple

    def __str__(self):
        keys = ", ".join(str(pk) for pk in self.pks[:10]) + (" ..." if len(self.pks) > 10 else "")
        if self.kind == "boundary":
            return f"cascade reaches {self.model} rows outside the scope: {keys}"
        return f"{self.model}.{self.field} ({self.kind.upper()}) references owned rows: {keys}"


def _freeze(mapping):
    return MappingProxyType({k: frozenset(v) for k, v in mapping.items() if v})


@dataclass(frozen=True)
class Plan:
    """The result of a walk. Containers are keyed by concrete model label."""

    subjects: tuple  # ((label, pk), ...)
    using: str
    scope: Scope
    owned: MappingProxyType  # {label: frozenset(pk)}
    updates: MappingProxyType  # {label: {field name: frozenset(pk)}}
    references: MappingProxyType  # {label: frozenset(pk)}
    boundary: MappingProxyType  # {label: frozenset(pk)}
    blockers: tuple  # (Blocker, ...)
    via: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # {label: frozenset("Src.relation")}
    queries: int = 0

    def counts(self):
        """Return {"owned": {label: n}, "updates": {...}, "references": {...}}."""
        return {
            "owned": {k: len(v) for k, v in sorted(self.owned.items())},
            "updates": {
                k: len(set().union(*v.values())) for k, v in sorted(self.updates.items())
            },
            "references": {k: len(v) for k, v in sorted(self.references.items())},
        }

    @property
    def total_owned(self):
        return sum(len(v) for v in self.owned.values())

    def owns(self, model_label, pk):
        return pk in self.owned.get(model_label, ())


def _chunks(values, size):
    values = sorted(values, key=_sort_key)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _sort_key(value):
    return (str(type(value)), value) if value is not None else ("", "")


def _on_delete_kind(on_delete):
    if on_delete is models.CASCADE:
        return "cascade"
    if on_delete is models.PROTECT:
        return "protect"
    if on_delete is models.RESTRICT:
        return "restrict"
    if on_delete is models.DO_NOTHING:
        return "nothing"
    # SET_NULL, SET_DEFAULT, SET(...) and custom handlers: the rows are
    # changed, not deleted. The erase guard checks Django's own view anyway.
    return "update"


class _Walker:
    def __init__(self, using, scope, batch_size, lock=False):
        self.lock = lock
        self.using = using
        self.scope = scope
        self.batch = batch_size
        self.queries = 0
        self.owned = defaultdict(set)  # {label: {pk}}
        self.updates = defaultdict(lambda: defaultdict(set))  # {label: {field: {pk}}}
        self.protected = defaultdict(set)  # {(label, field): {pk}}
        self.restricted = defaultdict(set)  # {(label, field): {pk}}
        self.boundary = defaultdict(set)  # {label: {pk}}
        self.cascade_boundary = defaultdict(set)  # {label: {pk}} boundary rows a delete would remove
        self.references = defaultdict(set)  # {label: {pk}}
        self.via = defaultdict(set)  # {label: {"Src.relation"}}
        self.subject_keys = set()

    def qs(self, model):
        return model._base_manager.using(self.using)

    def locking_qs(self, model):
        """Queries of the owned walk: with lock=True they lock what they read.

        SELECT ... FOR UPDATE on the rows found (PostgreSQL, MySQL/MariaDB)
        reads the latest committed rows and blocks inserts whose foreign key
        points at them until the transaction ends, so the owned set cannot
        grow behind the erase guard. SQLite ignores it (its writer lock
        already serialises the erase).
        """
        qs = self.qs(model)
        return qs.select_for_update() if self.lock else qs

    def values(self, qs, *fields):
        self.queries += 1
        return list(qs.values_list(*fields))

    # -- owned set: what deletion removes --------------------------------
    def walk_owned(self, roots):
        frontier = defaultdict(set)
        for model_label, pk in roots:
            frontier[model_label].add(pk)
        while frontier:
            model_label = next(iter(frontier))
            new = frontier.pop(model_label) - self.owned[model_label]
            if not new:
                continue
            self.owned[model_label] |= new
            model = relations.get_model(model_label)
            for target_label, pks, via in self.cascade_from(model, new):
                if target_label in self.scope.boundaries:
                    outside = {pk for pk in pks if (target_label, pk) not in self.subject_keys}
                    self.boundary[target_label] |= outside
                    self.cascade_boundary[target_label] |= outside
                    pks = set(pks) - outside
                if pks:
                    self.via[target_label].add(via)
                    frontier[target_label] |= set(pks)

    def cascade_from(self, model, pks):
        """Yield (label, pks, via) of rows deleting `pks` of `model` cascades to."""
        model_label = relations.label(model)
        # Multi-table inheritance: deleting a child deletes its parent rows.
        for parent, ptr in model._meta.parents.items():
            if ptr is None:
                continue
            if ptr.primary_key:
                parent_pks = set(pks)
                if self.lock:  # found without a query: lock the parent rows too
                    for chunk in _chunks(pks, self.batch):
                        self.values(self.locking_qs(parent).filter(pk__in=chunk), "pk")
            else:
                parent_pks = set()
                for chunk in _chunks(pks, self.batch):
                    parent_pks |= {v for (v,) in self.values(self.locking_qs(model).filter(pk__in=chunk), ptr.attname)}
            yield relations.label(parent), parent_pks, f"{model_label}.{ptr.name}"
        for rel in relations.reverse_relations(model):
            fk = rel.field
            related = rel.related_model._meta.concrete_model
            related_label = relations.label(related)
            kind = _on_delete_kind(rel.on_delete)
            if kind == "nothing":
                continue
            found = set()
            for chunk in self.target_values(model, pks, fk.target_field):
                qs = self.locking_qs(related).filter(**{f"{fk.attname}__in": chunk})
                found |= {v for (v,) in self.values(qs, "pk")}
            if not found:
                continue
            via = f"{related_label}.{fk.name}"
            if kind == "cascade":
                yield related_label, found, via
            elif kind == "update":
                self.updates[related_label][fk.name] |= found
            elif kind == "protect":
                self.protected[related_label, fk.name] |= found
            elif kind == "restrict":
                self.restricted[related_label, fk.name] |= found
        for grel in relations.generic_relations(model):
            related = grel.related_model._meta.concrete_model
            ct = ContentType.objects.db_manager(self.using).get_for_model(
                model, for_concrete_model=grel.for_concrete_model
            )
            ct_att = related._meta.get_field(grel.content_type_field_name).attname
            fk_field = related._meta.get_field(grel.object_id_field_name)
            found = set()
            for chunk in _chunks(pks, self.batch):
                ids = [fk_field.to_python(pk) if not isinstance(pk, tuple) else pk for pk in chunk]
                qs = self.locking_qs(related).filter(**{ct_att: ct.pk, f"{fk_field.attname}__in": ids})
                found |= {v for (v,) in self.values(qs, "pk")}
            if found:
                yield relations.label(related), found, f"{model_label}.{grel.name}"

    def target_values(self, model, pks, target_field):
        """Yield chunks of the values an FK to `target_field` holds for `pks`."""
        if target_field.primary_key or target_field is model._meta.pk:
            yield from _chunks(pks, self.batch)
            return
        for chunk in _chunks(pks, self.batch):
            vals = [v for (v,) in self.values(self.locking_qs(model).filter(pk__in=chunk), target_field.attname)]
            if vals:
                yield vals

    # -- references: the forward dependency closure ----------------------
    def walk_references(self):
        frontier = {k: set(v) for k, v in self.owned.items()}
        seen = defaultdict(set)
        while frontier:
            model_label = next(iter(frontier))
            pks = frontier.pop(model_label) - seen[model_label]
            if not pks:
                continue
            seen[model_label] |= pks
            model = relations.get_model(model_label)
            for target_label, target_pks, via in self.forward_targets(model, pks):
                new = {pk for pk in target_pks if pk not in self.owned.get(target_label, ())}
                if target_label in self.scope.boundaries:
                    self.boundary[target_label] |= new
                    continue
                new -= self.references[target_label]
                if new:
                    self.references[target_label] |= new
                    self.via[target_label].add(via)
                    frontier.setdefault(target_label, set()).update(new)

    def forward_targets(self, model, pks):
        """Yield (label, pks, via) of rows that `pks` of `model` point to."""
        fks = relations.forward_fks(model)
        gfks = relations.generic_foreign_keys(model)
        if not fks and not gfks:
            return
        columns = [f.attname for f in fks]
        for _, ct_field, fk_field in gfks:
            columns += [ct_field.attname, fk_field.attname]
        targets = defaultdict(set)  # {field index: {value}}
        generic = defaultdict(set)  # {content type id: {object id}}
        for chunk in _chunks(pks, self.batch):
            for row in self.values(self.qs(model).filter(pk__in=chunk), *columns):
                for i, f in enumerate(fks):
                    if row[i] is not None:
                        targets[i].add(row[i])
                for j in range(len(gfks)):
                    ct_id, obj_id = row[len(fks) + 2 * j], row[len(fks) + 2 * j + 1]
                    if ct_id is not None and obj_id is not None:
                        generic[ct_id].add(obj_id)
        model_label = relations.label(model)
        for i, values in targets.items():
            f = fks[i]
            target = f.related_model._meta.concrete_model
            if f.target_field.primary_key:
                target_pks = values
            else:
                target_pks = set()
                for chunk in _chunks(values, self.batch):
                    qs = self.qs(target).filter(**{f"{f.target_field.attname}__in": chunk})
                    target_pks |= {v for (v,) in self.values(qs, "pk")}
            yield relations.label(target), target_pks, f"{model_label}.{f.name}"
        for ct_id, obj_ids in generic.items():
            ct = ContentType.objects.db_manager(self.using).get_for_id(ct_id)
            target = ct.model_class()
            if target is None:  # a stale content type: nothing to export
                continue
            target = target._meta.concrete_model
            pk_field = target._meta.pk
            found = set()
            for chunk in _chunks({pk_field.to_python(v) for v in obj_ids}, self.batch):
                found |= {v for (v,) in self.values(self.qs(target).filter(pk__in=chunk), "pk")}
            yield relations.label(target), found, f"{model_label}.{gfks[0][0].name}"

    def blockers(self):
        result = []
        for (model_label, fname), pks in sorted(self.protected.items()):
            result.append(Blocker("protect", model_label, fname, tuple(sorted(pks, key=_sort_key))))
        for (model_label, fname), pks in sorted(self.restricted.items()):
            left = pks - self.owned.get(model_label, set())
            if left:
                result.append(Blocker("restrict", model_label, fname, tuple(sorted(left, key=_sort_key))))
        return tuple(result)


def resolve(objects, using="default"):
    """Return ((label, pk), ...) for model instances or (model, pk) pairs.

    A proxy instance resolves to its concrete model (its row is the same).
    """
    keys = []
    for obj in objects:
        if isinstance(obj, models.Model):
            keys.append((relations.label(type(obj)), obj.pk))
        else:
            model, pk = obj
            if isinstance(model, str):
                model = relations.get_model(model)
            keys.append((relations.label(model), pk))
    return tuple(keys)


def walk(objects, *, scope=None, using="default", batch_size=None, lock=False):
    """Walk `objects` (instances, or (model or label, pk) pairs) into a Plan.

    This is a read-only operation. Missing subjects raise ObjectSpecError.
    With `lock=True` (inside a transaction) every row of the owned set and
    every row erasure would change is locked FOR UPDATE as it is found.
    """
    scope = scope or Scope()
    batch_size = batch_size or conf.get("BATCH_SIZE")
    roots = resolve(objects, using)
    walker = _Walker(using, scope, batch_size, lock=lock)
    walker.subject_keys = set(roots)
    by_model = defaultdict(set)
    for model_label, pk in roots:
        by_model[model_label].add(pk)
    for model_label, pks in by_model.items():
        model = relations.get_model(model_label)
        found = set()
        for chunk in _chunks(pks, batch_size):
            found |= {v for (v,) in walker.values(walker.qs(model).filter(pk__in=chunk), "pk")}
        missing = pks - found
        if missing:
            raise ObjectSpecError(
                f"{model_label} has no object with pk {', '.join(repr(m) for m in sorted(missing, key=_sort_key))}"
                f" (database {using!r})"
            )
    walker.walk_owned(roots)
    walker.walk_references()
    updates = {}
    for model_label, per_field in walker.updates.items():
        owned = walker.owned.get(model_label, set())
        kept = {f: frozenset(pks - owned) for f, pks in per_field.items() if pks - owned}
        if kept:
            updates[model_label] = MappingProxyType(kept)
    blockers = list(walker.blockers())
    for model_label, pks in sorted(walker.cascade_boundary.items()):
        # Deleting the subject would delete these too, but the scope forbids
        # exporting them: erasure must refuse.
        blockers.append(Blocker("boundary", model_label, "", tuple(sorted(pks, key=_sort_key))))
    return Plan(
        subjects=roots,
        using=using,
        scope=scope,
        owned=_freeze(walker.owned),
        updates=MappingProxyType(updates),
        references=_freeze(walker.references),
        boundary=_freeze(walker.boundary),
        blockers=tuple(blockers),
        via=_freeze(walker.via),
        queries=walker.queries,
    )
