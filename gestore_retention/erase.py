"""Engine: guarded deletion through Django's deletion Collector.

Gather, check, execute. The Collector gathers what Django would delete; the
guard refuses unless that is exactly the plan's owned set (and the changed
rows are the plan's updates), the rows still hash to what was exported, and
a caller's precheck (a legal hold, say) passes, all inside one transaction
that holds a lock on the subjects.

A subject with more owned rows than ERASE_BATCH_ROWS, erased from a bundle
that carries per-chunk digests, is erased in batches instead: the first
transaction makes the whole check above and applies the updates; each batch
transaction then locks the subjects again, repeats the precheck, re-hashes
exactly its chunks of keys and walks its rows, and deletes only rows that are
still exactly the bundle's. See `erase_subjects`.
"""
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import chain

from django.db import connections, transaction
from django.db.models import ProtectedError, RestrictedError, signals
from django.db.models.deletion import Collector

from . import conf
from .errors import EraseRefused, ErasureBlocked
from .graph import relations
from .graph.keys import KeySet, key_filter, sort_key
from .graph.walk import _chunks, _pk_value, walk
from .records import chunk_digest, owned_digest


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


def erase_subjects(subjects, *, scope, using="default", expected_digest, precheck=None, on_erased=None,
                   chunks=None, batch_rows=None, resume=False, on_batch_erased=None, on_batch=None):
    """Like erase(), for subjects ((label, pk), ...) guarded by a bundle's digest alone.

    The digest covers every owned and update record (keys and values), so
    it decides by itself whether the rows are still exactly the bundle's.

    Batches: with `chunks` (the bundle's per-chunk digests, `Export.chunks`)
    and more owned rows than `batch_rows` (default ERASE_BATCH_ROWS), the
    first transaction checks the whole digest and applies the updates; then
    each batch of at most `batch_rows` rows (more when a row's cascade
    reaches into later chunks, which join its batch), children before
    parents and the subjects last, commits on its own after re-checking its
    chunks. `on_batch_erased(result)` runs inside each committed transaction
    but the last, which runs `on_erased(total result)`; `on_batch(done rows,
    total rows, the batch's models)` after each commit. `resume=True` (the caller knows
    earlier batches of this bundle committed) skips the whole-digest check:
    chunks whose rows are all gone are done, the others are checked as
    usual. A refusal after a commit leaves the subject partly erased, every
    deleted row in the bundle: the EraseRefused has `partial` set and
    `erased` rows counted.
    """
    return _erase(tuple(subjects), scope, using, expected=None, expected_digest=expected_digest,
                  precheck=precheck, on_erased=on_erased, chunks=chunks, batch_rows=batch_rows, resume=resume,
                  on_batch_erased=on_batch_erased, on_batch=on_batch)


def _delete(plan):
    """Delete `plan` (in the caller's transaction); its stored files go once that commits."""
    files = owned_files(plan) if plan.scope.include_files else ()
    deleted, updated = delete_plan(plan)
    files = unreferenced(files, plan.using)
    # Stored files go only once the deletion is committed (a rollback keeps them).
    transaction.on_commit(lambda: remove_stored(files), using=plan.using, robust=True)
    return deleted, updated, len(files)


def _erase(subjects, scope, using, *, expected, expected_digest, precheck, on_erased,
           chunks=None, batch_rows=None, resume=False, on_batch_erased=None, on_batch=None):
    batch_rows = batch_rows or conf.get("ERASE_BATCH_ROWS")
    stored = (chunks or {}).get("owned")
    if resume and not stored:
        raise EraseRefused("cannot resume a batched erase: the bundle has no chunk digests; nothing deleted")
    try:
        with transaction.atomic(using=using):
            lock_subjects(subjects, using)
            if precheck is not None:
                precheck()
            fresh = walk(subjects, scope=scope, using=using, lock=True)
            if fresh.blockers:
                raise blocked(fresh)
            if resume:
                # The updates were applied with the first batch: any row erasure would change now is new.
                if any(fresh.updates.values()):
                    raise EraseRefused("rows that erasure would change arrived since the earlier batches")
                todo = _pending_chunks(fresh, stored, resume=True)
                digest, updated = expected_digest, {}
            else:
                if expected is not None:
                    _require_same(expected, fresh)
                digest = owned_digest(fresh)
                if expected_digest is not None and digest != expected_digest:
                    raise EraseRefused(
                        "rows changed or arrived since the bundle was made (digest differs); nothing deleted, export again"
                    )
                if not stored or fresh.total_owned <= batch_rows:
                    deleted, updated, files = _delete(fresh)
                    result = EraseResult(subjects=subjects, deleted=deleted, updated=updated, digest=digest, files=files)
                    if on_erased is not None:
                        on_erased(result)
                    return result
                todo = _pending_chunks(fresh, stored, resume=False)
                updated = apply_updates(fresh)
                if on_batch_erased is not None:
                    on_batch_erased(EraseResult(subjects=subjects, deleted={}, updated=updated, digest=digest))
    except EraseRefused as exc:
        if resume:
            _partly(exc, 0, resume)
        raise
    return _erase_batches(fresh, todo, digest=digest, updated=updated, batch_rows=batch_rows, precheck=precheck,
                          resume=resume, on_erased=on_erased, on_batch_erased=on_batch_erased, on_batch=on_batch)


def _partly(exc, erased, resume):
    """Say in `exc` that the subject is partly erased (`erased` rows now, more earlier when `resume`)."""
    exc.partial, exc.erased = True, erased
    earlier = " (more in the batches of an earlier run)" if resume else ""
    exc.args = (f"{exc.args[0] if exc.args else exc}; the subject is partly erased: earlier batches deleted "
                f"{erased} row(s){earlier}, every one of them in the verified bundle (keep it); "
                "nothing else was deleted, the rest must be exported again",) + exc.args[1:]


@dataclass(eq=False)  # compared by identity
class _Chunk:
    """One stored chunk of a bundle's owned rows, with the keys of it still present."""

    label: str
    entry: list  # [first key, last key, records, sha256 hex] as the bundle stores it
    keys: KeySet  # its keys still present
    first: object
    last: object
    subject: bool = False  # holds a subject row: erased in the last batch

    def __str__(self):
        return f"{self.label} chunk {self.entry[0]}..{self.entry[1]}"


def _pending_chunks(plan, stored, *, resume):
    """Return the stored chunks still to erase ([_Chunk]) in deletion order, the subjects' last.

    Each owned key of `plan` (a locked walk) must fall in a stored chunk, and
    a chunk must hold all its rows (or, when resuming, none: erased already).
    Raise EraseRefused otherwise: a key in no chunk is a new row, a chunk
    partly there lost rows to someone else.
    """
    problems = []
    for lb in sorted(set(plan.owned) - set(stored)):
        problems.append(f"{lb}: {len(plan.owned[lb])} row(s) not in the bundle")
    subjects = set(plan.subjects)
    by_label = {}
    for lb, entries in stored.items():
        model = relations.get_model(lb)
        keys = list(plan.owned.get(lb, ()))  # a KeySet iterates in key order
        i, stray, out = 0, 0, []
        for entry in entries:
            first, last = _pk_value(model, entry[0]), _pk_value(model, entry[1])
            while i < len(keys) and sort_key(keys[i]) < sort_key(first):
                stray, i = stray + 1, i + 1
            j = i
            while j < len(keys) and sort_key(keys[j]) <= sort_key(last):
                j += 1
            present, i = keys[i:j], j
            if not present and (resume or not entry[2]):
                continue  # erased by an earlier batch (or empty)
            if len(present) != entry[2]:
                problems.append(f"{lb}: chunk {entry[0]}..{entry[1]} holds {len(present)} of its {entry[2]} "
                                "row(s) (rows were deleted or added outside this erase)")
                continue
            out.append(_Chunk(lb, entry, KeySet(present), first, last, any((lb, k) in subjects for k in present)))
        stray += len(keys) - i
        if stray:
            problems.append(f"{lb}: {stray} row(s) not in the bundle")
        by_label[lb] = out
    if problems:
        raise EraseRefused("the owned set changed since the bundle was made (" + "; ".join(problems) + ")")
    todo = [c for lb in _deletion_order(by_label) for c in by_label[lb]]
    return [c for c in todo if not c.subject] + [c for c in todo if c.subject]


def _deletion_order(labels):
    """Return `labels` children before parents, a multi-table child just before its parent.

    A child's row goes with its parent row (the walk brings the parent's
    chunk into the child's batch): taken last among the parent's children,
    it no longer drags the other children's rows (a document's comments,
    say) into its batch.
    """
    order = [relations.label(m) for m in reversed(relations.insert_order([relations.get_model(lb) for lb in labels]))]
    for model in [relations.get_model(lb) for lb in list(order)]:
        parents = [relations.label(p) for p in model._meta.parents if relations.label(p) in order]
        if parents:
            order.remove(relations.label(model))
            order.insert(min(order.index(p) for p in parents), relations.label(model))
    return order


def _erase_batches(fresh, todo, *, digest, updated, batch_rows, precheck, resume, on_erased, on_batch_erased,
                   on_batch):
    using, subjects = fresh.using, fresh.subjects
    total = sum(len(c.keys) for c in todo)
    done, files, deleted = 0, 0, Counter()
    pending = list(todo)
    try:
        while pending:
            group = [pending.pop(0)]
            while pending and not pending[0].subject and sum(len(c.keys) for c in group) + len(pending[0].keys) <= batch_rows:
                group.append(pending.pop(0))
            with transaction.atomic(using=using):
                lock_subjects(subjects, using)
                if precheck is not None:
                    precheck()
                batch = _batch_plan(fresh, group, pending)
                n_deleted, _, n_files = _delete(batch)
                result = EraseResult(subjects=subjects, deleted=dict(deleted + Counter(n_deleted)), updated=updated,
                                     digest=digest, files=files + n_files)
                if pending:
                    if on_batch_erased is not None:
                        on_batch_erased(EraseResult(subjects=subjects, deleted=n_deleted, updated={}, digest=digest,
                                                    files=n_files))
                elif on_erased is not None:
                    on_erased(result)
            deleted.update(n_deleted)
            done, files = done + sum(n_deleted.values()), files + n_files
            if on_batch is not None:
                on_batch(done, total, _models_text(group))
    except EraseRefused as exc:
        if done or updated or resume:
            _partly(exc, done, resume)
        raise
    return result


def _models_text(group):
    """The models of a batch's chunks: "a.B", "a.B, a.C" or "a.B ... a.D (5 models)"."""
    labels = list(dict.fromkeys(c.label for c in group))
    return ", ".join(labels) if len(labels) <= 2 else f"{labels[0]} ... {labels[-1]} ({len(labels)} models)"


def _batch_plan(fresh, group, pending):
    """Check `group`'s chunks and return the locked Plan that deletes exactly their rows.

    Each chunk's rows are read FOR UPDATE and must hash to the bundle's
    digest of that chunk. Walked as subjects, the rows must own nothing
    outside the bundle's chunks and change no row (the updates were applied
    first): a row their cascade reaches in a later chunk (a reply to a
    comment, a multi-table parent) brings its whole chunk into this batch,
    checked the same way; anything else is new since the export. A group
    that takes in the subjects' chunk takes in every chunk left.
    """
    checked = 0
    while True:
        problems = []
        for c in group[checked:]:
            n, sha = chunk_digest(fresh, c.label, c.keys, lock=True)
            if (n, sha) != (c.entry[2], c.entry[3]):
                problems.append(f"{c}: {'rows changed' if n == c.entry[2] else 'rows went'} since the bundle was made")
        if problems:
            raise EraseRefused("the bundle no longer matches the rows (" + "; ".join(problems) + ")")
        checked = len(group)
        keys = defaultdict(list)  # {label: [pk]}
        for c in group:
            keys[c.label].extend(c.keys)
        plan = walk([(lb, k) for lb, ks in keys.items() for k in ks], scope=fresh.scope, using=fresh.using,
                    lock=True)
        # Rows the batch owns, changes or is RESTRICTed by must be its own; a later chunk's row joins it.
        extra = defaultdict(set)  # {label: {pk}}
        for b in plan.blockers:
            if b.kind != "restrict":
                raise blocked(plan)
            extra[b.model] |= set(b.pks)
        for lb, pks in plan.owned.items():
            extra[lb] |= set(pks - KeySet(keys.get(lb, ())))
        for lb, per_field in plan.updates.items():
            for pks in per_field.values():
                extra[lb] |= set(pks)
        joining = _chunks_holding({lb: pks for lb, pks in extra.items() if pks}, pending)
        if any(c.subject for c in group + joining):
            joining = list(pending)
        if not joining:
            if plan.blockers:
                raise blocked(plan)
            return plan
        for c in joining:
            pending.remove(c)
        group.extend(joining)


def _chunks_holding(extra, pending):
    """Return the pending chunks that hold the keys `extra` ({label: KeySet}); raise for a key in none."""
    found, stray = [], Counter()
    for lb, pks in extra.items():
        mine = [c for c in pending if c.label == lb]
        firsts = [sort_key(c.first) for c in mine]
        for pk in pks:
            i = bisect_right(firsts, sort_key(pk)) - 1
            c = mine[i] if i >= 0 else None
            if c is None or sort_key(pk) > sort_key(c.last) or pk not in c.keys:
                stray[lb] += 1
            elif c not in found:
                found.append(c)
    if stray:
        raise EraseRefused("rows arrived or changed since the bundle was made: " + "; ".join(
            f"{lb}: {n} row(s) the batch would delete or change are not in the bundle" for lb, n in sorted(stray.items())))
    return found


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
    updated = apply_updates(plan, batch)
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


def apply_updates(plan, batch_size=None):
    """Apply `plan`'s updates (SET_NULL, SET_DEFAULT, SET(...)) and delete nothing; return {label: rows}.

    Each relation's own on_delete handler computes the new value, as in a
    Collector's delete (field updates send no signals).
    """
    batch = batch_size or conf.get("BATCH_SIZE")
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
    return dict(updated)


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
