"""Engine: guarded deletion through Django's deletion Collector.

Gather, check, execute. The Collector gathers what Django would delete; the
guard refuses unless that is exactly the plan's owned set (and the changed
rows are the plan's updates), the rows still hash to what was exported, and
a caller's precheck (a legal hold, say) passes, all inside one transaction
that holds a lock on the subjects.
"""
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain

from django.db import connections, transaction
from django.db.models import ProtectedError, RestrictedError, signals
from django.db.models.deletion import Collector

from . import conf
from .errors import EraseRefused, ErasureBlocked
from .graph import relations
from .graph.keys import key_filter
from .graph.walk import _chunks, walk
from .records import owned_digest


@dataclass(frozen=True)
class EraseResult:
    """What an erase did: rows deleted per model, rows changed per model."""

    subjects: tuple
    deleted: dict  # {label: n}
    updated: dict  # {label: n}
    digest: str
    files: int = 0  # stored files removed with the rows (after commit)

    @property
    def total(self):
        return sum(self.deleted.values())


def _file_fields(model):
    from django.db.models import FileField

    return [f for f in model._meta.local_concrete_fields if isinstance(f, FileField)]


def owned_files(plan):
    """Return [(field, name)] of the stored files the plan's owned rows name (the bundle carries their bytes)."""
    out = []
    for model_label, pks in plan.owned.items():
        model = relations.get_model(model_label)
        for f in _file_fields(model):
            for chunk in _chunks(pks, conf.get("BATCH_SIZE")):
                qs = model._base_manager.using(plan.using).filter(key_filter("pk", chunk)).exclude(**{f.attname: ""})
                out.extend((f, name) for (name,) in qs.values_list(f.attname) if name)
    return out


def unreferenced(files, using):
    """Drop from [(field, name)] the files that rows still name (after the delete, in its transaction)."""
    by_field = defaultdict(set)
    for f, name in files:
        by_field[f].add(name)
    kept = []
    for f, names in by_field.items():
        still = set()
        for chunk in _chunks(names, conf.get("BATCH_SIZE")):
            qs = f.model._base_manager.using(using).filter(**{f"{f.attname}__in": chunk})
            still |= {name for (name,) in qs.values_list(f.attname)}
        kept.extend((f, name) for name in sorted(names - still))
    return kept


def remove_stored(files):
    """Delete stored files; one that is already gone is fine."""
    for f, name in files:
        try:
            f.storage.delete(name)
        except FileNotFoundError:
            pass


def _instances(plan):
    """Yield the rows the Collector starts from, one list per model (collect() takes one model at a time).

    The subjects, then the rows the plan's scope adds (extra owned and
    soft-related rows): the Collector's set from all of them is the plan's owned set.
    """
    from .graph.edges import chunks

    by_model = defaultdict(set)
    for model_label, pk in plan.subjects:
        by_model[model_label].add(pk)
    for model_label, pks in plan.extra.items():
        by_model[model_label] |= pks
    for model_label, pks in sorted(by_model.items()):
        model = relations.get_model(model_label)
        objs = []
        for chunk in chunks(pks, 1000):
            objs.extend(model._base_manager.using(plan.using).filter(key_filter("pk", chunk)))
        if objs:
            yield objs


def collect(plan):
    """Return a Collector that has gathered `plan`'s subjects (nothing is deleted)."""
    collector = Collector(using=plan.using, origin=None)
    try:
        for objs in _instances(plan):
            # collect() checks RESTRICT at the end of each call, but a row
            # restricted by one model's rows may be cascaded by the next
            # model's (a node and the realm that owns its lock): check once,
            # over everything gathered, as one collect() of all the rows would.
            collector.collect(objs, fail_on_restricted=False)
        _check_restricted(collector)
    except ProtectedError as exc:
        raise ErasureBlocked(f"Django refuses the delete: {exc.args[0]}", exc.protected_objects) from None
    except RestrictedError as exc:
        raise ErasureBlocked(f"Django refuses the delete: {exc.args[0]}", exc.restricted_objects) from None
    return collector


def _check_restricted(collector):
    """Raise RestrictedError for RESTRICT-ed rows the Collector does not delete anyway (Django's own check)."""
    for model, instances in collector.data.items():
        collector.clear_restricted_objects_from_set(model, instances)
    for qs in collector.fast_deletes:
        collector.clear_restricted_objects_from_queryset(qs.model, qs)
    left = defaultdict(list)  # {"'Model.field'": [obj, ...]}
    for model, per_field in collector.restricted_objects.items():
        for field, objs in per_field.items():
            if objs:
                left[f"'{model.__name__}.{field.name}'"] += objs
    if left:
        raise RestrictedError(
            "Cannot delete some instances because they are referenced through restricted foreign keys: "
            + ", ".join(left) + ".",
            set(chain.from_iterable(left.values())),
        )


def _pks(objs):
    if hasattr(objs, "values_list"):
        return set(objs.values_list("pk", flat=True))
    return {obj.pk for obj in objs}


def collected_keys(collector):
    """Return ({label: {pk}} deleted, {label: {pk}} changed) as the Collector sees them."""
    deleted = defaultdict(set)
    for model, instances in collector.data.items():
        deleted[relations.label(model)] |= {obj.pk for obj in instances}
    for qs in collector.fast_deletes:
        deleted[relations.label(qs.model)] |= _pks(qs)
    changed = defaultdict(set)
    for (field, _value), batches in collector.field_updates.items():
        for objs in batches:
            changed[relations.label(field.model)] |= _pks(objs)
    return deleted, changed


def check_collector(plan, collector):
    """Raise EraseRefused unless the Collector would delete exactly `plan.owned`."""
    deleted, changed = collected_keys(collector)
    problems = []
    for model_label in sorted(set(deleted) | set(plan.owned)):
        have, want = deleted.get(model_label, set()), set(plan.owned.get(model_label, ()))
        if have - want:
            problems.append(f"{model_label}: {len(have - want)} row(s) not in the bundle")
        if want - have:
            problems.append(f"{model_label}: {len(want - have)} bundled row(s) would not be deleted")
    for model_label, pks in sorted(changed.items()):
        known = set(plan.owned.get(model_label, ()))
        for per_field in plan.updates.get(model_label, {}).values():
            known |= per_field
        if pks - known:
            problems.append(f"{model_label}: {len(pks - known)} changed row(s) not in the bundle")
    if problems:
        raise EraseRefused("the delete would not match the bundle: " + "; ".join(problems))


def lock_subjects(subjects, using):
    """Lock the subject rows for the rest of the transaction.

    PostgreSQL and MySQL/MariaDB: SELECT ... FOR UPDATE. SQLite has no row
    locks; a no-op UPDATE takes the database write lock at once, so no other
    connection can write until we commit.
    """
    connection = connections[using]
    for model_label, pk in subjects:
        qs = relations.get_model(model_label)._base_manager.using(using).filter(pk=pk)
        if connection.vendor == "sqlite":
            pk_field = qs.model._meta.pk
            qs.update(**{pk_field.attname: pk})
        else:
            list(qs.select_for_update().values_list("pk"))


def erase(plan, *, expected_digest=None, precheck=None, on_erased=None):
    """Delete `plan`'s subjects, refusing if anything differs from `plan`.

    Inside one transaction: lock the subjects, run `precheck()` (it raises to
    refuse), walk again with row locks and require the same owned set and
    updates as `plan` and (when given) the same row digest, delete, then call
    `on_erased(result)` so the caller's audit event commits with the
    deletion. Raises EraseRefused and deletes nothing when any check fails.
    """
    return _erase(plan.subjects, plan.scope, plan.using, expected=plan, expected_digest=expected_digest,
                  precheck=precheck, on_erased=on_erased)


def erase_subjects(subjects, *, scope, using="default", expected_digest, precheck=None, on_erased=None):
    """Like erase(), for subjects ((label, pk), ...) guarded by a bundle's digest alone.

    The digest covers every owned and update record (keys and values), so
    it decides by itself whether the rows are still exactly the bundle's.
    """
    return _erase(tuple(subjects), scope, using, expected=None, expected_digest=expected_digest,
                  precheck=precheck, on_erased=on_erased)


def _erase(subjects, scope, using, *, expected, expected_digest, precheck, on_erased):
    with transaction.atomic(using=using):
        lock_subjects(subjects, using)
        if precheck is not None:
            precheck()
        fresh = walk(subjects, scope=scope, using=using, lock=True)
        if fresh.blockers:
            raise blocked(fresh)
        if expected is not None:
            _require_same(expected, fresh)
        digest = owned_digest(fresh)
        if expected_digest is not None and digest != expected_digest:
            raise EraseRefused(
                "rows changed or arrived since the bundle was made (digest differs); nothing deleted, export again"
            )
        files = owned_files(fresh) if fresh.scope.include_files else ()
        deleted, updated = delete_plan(fresh)
        files = unreferenced(files, using)
        # Stored files go only once the deletion is committed (a rollback keeps them).
        transaction.on_commit(lambda: remove_stored(files), using=using, robust=True)
        result = EraseResult(subjects=subjects, deleted=deleted, updated=updated, digest=digest, files=len(files))
        if on_erased is not None:
            on_erased(result)
    return result


def _has_delete_receivers(model):
    return signals.pre_delete.has_listeners(model) or signals.post_delete.has_listeners(model)


def _non_null_cycle(models_):
    """True when a non-nullable FK points at a model deleted no later (e.g. itself)."""
    order = list(reversed(relations.insert_order(models_)))
    position = {m: i for i, m in enumerate(order)}
    for model in order:
        for f in relations.forward_fks(model):
            target = f.related_model._meta.concrete_model
            if target in position and position[target] <= position[model] and not f.null and not f.primary_key:
                return True
    return False


def delete_plan(plan, batch_size=None):
    """Delete exactly `plan`'s owned rows and apply its updates; return counts.

    Call inside the transaction whose locked walk produced `plan`. When no
    owned model has pre/post_delete receivers this feeds Django's Collector
    from the plan instead of letting it gather again: first the updates
    (each relation's own on_delete handler computes SET_NULL / SET_DEFAULT /
    SET(...)), then one DELETE per model and chunk, children before parents,
    so per-statement FK checks (MySQL/MariaDB) pass. With receivers, Django
    gathers the instances itself (signals are sent) and must agree with the
    plan. Return ({label: rows deleted}, {label: rows changed}).
    """
    batch = batch_size or conf.get("BATCH_SIZE")
    models_ = [relations.get_model(lb) for lb in plan.owned]
    if any(_has_delete_receivers(m) for m in models_) or _non_null_cycle(models_):
        collector = collect(plan)
        check_collector(plan, collector)
        _, changed = collected_keys(collector)
        _total, per_model = collector.delete()
        return _by_label(per_model), {k: len(v) for k, v in changed.items()}
    updates = Collector(using=plan.using, origin=None)
    updated = defaultdict(int)
    for model_label, per_field in plan.updates.items():
        model = relations.get_model(model_label)
        for fname, pks in per_field.items():
            field = model._meta.get_field(fname)
            for chunk in _chunks(pks, batch):
                field.remote_field.on_delete(updates, field, model._base_manager.using(plan.using).filter(key_filter("pk", chunk)), plan.using)
            updated[model_label] += len(pks)
    updates.delete()  # no rows to delete: this runs the field updates only
    order = list(reversed(relations.insert_order(models_)))  # children before parents
    position = {m: i for i, m in enumerate(order)}
    for model in order:
        # An FK to a row deleted no later than its own row (a self-reference,
        # a nullable cycle) would fail a per-statement check: clear it first.
        for f in relations.forward_fks(model):
            target = f.related_model._meta.concrete_model
            if target in position and position[target] <= position[model] and not f.primary_key:
                for chunk in _chunks(plan.owned[relations.label(model)], batch):
                    model._base_manager.using(plan.using).filter(key_filter("pk", chunk)).exclude(
                        **{f"{f.attname}__isnull": True}).update(**{f.attname: None})
    deletes = Collector(using=plan.using, origin=None)
    for model in order:
        for chunk in _chunks(plan.owned[relations.label(model)], batch):
            deletes.fast_deletes.append(model._base_manager.using(plan.using).filter(key_filter("pk", chunk)))
    _total, per_model = deletes.delete()
    return _by_label(per_model), dict(updated)


def blocked(plan):
    """Return the ErasureBlocked error for `plan`'s blockers, with the blocking rows."""
    rows = []
    for b in plan.blockers:
        model = relations.get_model(b.model)
        rows.extend(model._base_manager.using(plan.using).filter(pk__in=b.pks[:1000]))
    return ErasureBlocked("erasure is blocked: " + "; ".join(str(b) for b in plan.blockers), set(rows))


def _by_label(per_model):
    out = defaultdict(int)
    for label_, n in per_model.items():
        if n:
            out[relations.get_model(label_)._meta.label] += n
    return dict(out)


def _require_same(plan, fresh):
    problems = []
    for model_label in sorted(set(plan.owned) | set(fresh.owned)):
        old, new = plan.owned.get(model_label, frozenset()), fresh.owned.get(model_label, frozenset())
        if new - old:
            problems.append(f"{model_label}: {len(new - old)} new row(s)")
        if old - new:
            problems.append(f"{model_label}: {len(old - new)} row(s) gone")
    for model_label in sorted(set(plan.updates) | set(fresh.updates)):
        if dict(plan.updates.get(model_label, {})) != dict(fresh.updates.get(model_label, {})):
            problems.append(f"{model_label}: rows that erasure changes differ")
    if problems:
        raise EraseRefused(
            "the owned set changed since the bundle was made (" + "; ".join(problems) + "); nothing deleted"
        )
