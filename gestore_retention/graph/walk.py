"""Engine: walk a subject's object graph into a frozen Plan, in batches.

One query per (model, relation, frontier chunk), never one per object. The
walk mirrors what Django's deletion Collector would do to the subject:

* owned: rows the Collector deletes (CASCADE, M2M link rows, generic
  relations, multi-table parents and children), plus the rows a Scope adds
  (extra owned relations, soft relations) and what deleting those cascades to;
* updates: rows outside the owned set it modifies (SET_NULL, SET_DEFAULT,
  SET(...)), exported with their old values;
* references: the forward dependency closure of owned rows (FK, O2O,
  GenericForeignKey targets), exported so a restore into an empty database
  works, never deleted;
* boundary: rows of a model the scope forbids, reached by the walk and
  recorded as keys only.

The Plan keeps, per model and role, the relations (edges) that brought rows
in; `Plan.explain()` rebuilds one row's path from the subject on demand, so
memory stays bounded by the model graph, not by the rows.

The Plan is consumed by preview, export, erase and verification alike.
"""
from collections import defaultdict, deque
from dataclasses import dataclass, field
from types import MappingProxyType

from django.core.exceptions import FieldDoesNotExist
from django.db import models

from .. import conf
from ..errors import ObjectSpecError
from . import relations
from .edges import Edge, Follower, chunks, query_chunks, sort_key
from .keys import EMPTY, KeySet, KeySetBuilder, key_filter

# Kept for modules that imported the private helpers.
_chunks = chunks
_sort_key = sort_key

ROLES = ("owned", "update", "reference", "boundary")


@dataclass(frozen=True)
class SoftRelation:
    """A column without an FK constraint that still points at rows of another model.

    `SoftRelation("app.Usage", "tenant_id", target="app.Box")`: an integer
    column holding a Box pk. `SoftRelation("app.History", "object_pk",
    content_type="content_type")`: a content type + object pk pair, as audit
    and history apps write; with no `target` it applies to every owned model.
    Rows found this way are owned: they are copies of the subject's data.
    """

    model: str
    field: str
    target: str = ""
    content_type: str = ""

    def __str__(self):
        if self.content_type:
            text = f"{self.model}.{self.content_type}+{self.field}"
        else:
            text = f"{self.model}.{self.field}"
        return f"{text}->{self.target}" if self.target else text

    @classmethod
    def parse(cls, spec):
        """Accept a SoftRelation, a tuple of its fields, or "app.M.col->app.T" / "app.M.ct+object_pk"."""
        if isinstance(spec, cls):
            soft = spec
        elif isinstance(spec, (tuple, list)):
            soft = cls(*spec)
        else:
            text, _, target = str(spec).partition("->")
            head, _, column = text.strip().rpartition(".")
            content_type = ""
            if "+" in column:
                content_type, column = column.split("+", 1)
            soft = cls(head, column, target.strip(), content_type)
        model = _model(soft.model, f"soft relation {soft}")
        column = _field(model, soft.field, f"soft relation {soft}")
        if column.is_relation:
            raise ObjectSpecError(f"soft relation {soft}: {soft.field!r} is a foreign key; the walk follows it already")
        target = relations.label(_model(soft.target, f"soft relation {soft}")) if soft.target else ""
        ct = ""
        if soft.content_type:
            ct_field = _field(model, soft.content_type, f"soft relation {soft}")
            if ct_field.related_model is None or ct_field.related_model._meta.label != "contenttypes.ContentType":
                raise ObjectSpecError(f"soft relation {soft}: {soft.content_type!r} is not a content type FK")
            ct = ct_field.name
        elif not target:
            raise ObjectSpecError(f"soft relation {soft}: name its target model (\"->app.Model\")")
        return cls(relations.label(model), column.name, target, ct)


def _model(model_label, where):
    try:
        return relations.get_model(model_label)
    except ObjectSpecError:
        raise ObjectSpecError(f"{where}: unknown model {model_label!r}") from None


def _field(model, name, where):
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        raise ObjectSpecError(f"{where}: {model._meta.label} has no field {name!r}") from None


def _relation_field(spec):
    model_label, _, name = str(spec).rpartition(".")
    model = _model(model_label, f"owned relation {spec!r}")
    f = _field(model, name, f"owned relation {spec!r}")
    if not f.is_relation:
        raise ObjectSpecError(f"owned relation {spec!r}: {name!r} is not a relation")
    if isinstance(f, _gfk_class()):
        raise ObjectSpecError(f"owned relation {spec!r}: a GenericForeignKey cannot be owned; declare a soft relation")
    return model, f


def _gfk_class():
    from django.contrib.contenttypes.fields import GenericForeignKey

    return GenericForeignKey


@dataclass(frozen=True)
class Scope:
    """What the walk may cross and what it adds. A policy's [scope] table fills one of these."""

    boundaries: frozenset = frozenset()  # {model label}: never walked into beyond the subjects
    include_files: bool = True  # put stored files' bytes into the bundle
    owned_relations: frozenset = frozenset()  # {"app.Model.relation"}: what it reaches from owned rows is owned
    exclude_models: frozenset = frozenset()  # {model label}: never exported nor erased (kept as keys)
    exclude_fields: frozenset = frozenset()  # {"app.Model.field"}: exported as the field's default
    soft_relations: tuple = ()  # (SoftRelation, ...)

    @classmethod
    def of(cls, boundaries=(), include_files=True, *, owned_relations=(), exclude_models=(),
           exclude_fields=(), soft_relations=()):
        """Build a Scope from labels and names, checking each one (ObjectSpecError names the bad one)."""
        labels = frozenset(relations.label(_model(b, "boundary")) for b in boundaries)
        excluded = frozenset(relations.label(_model(b, "excluded model")) for b in exclude_models)
        owned = set()
        for spec in owned_relations:
            model, f = _relation_field(spec)
            owned.add(f"{relations.label(model)}.{f.name}")
        fields = set()
        for spec in exclude_fields:
            model_label, _, name = str(spec).rpartition(".")
            model = _model(model_label, f"excluded field {spec!r}")
            f = _field(model, name, f"excluded field {spec!r}")
            if not f.concrete or f.primary_key or f.is_relation:
                raise ObjectSpecError(f"excluded field {spec!r}: only plain columns can be excluded, not keys")
            fields.add(f"{relations.label(model)}.{f.name}")
        soft = tuple(sorted({SoftRelation.parse(s) for s in soft_relations}, key=str))
        return cls(boundaries=labels, include_files=include_files, owned_relations=frozenset(owned),
                   exclude_models=excluded, exclude_fields=frozenset(fields), soft_relations=soft)

    @property
    def forbidden(self):
        """Labels the walk records as keys and never exports."""
        return self.boundaries | self.exclude_models

    def excluded_fields(self, model_label):
        """Return the names of `model_label`'s fields this scope leaves out."""
        prefix = f"{model_label}."
        return frozenset(s[len(prefix):] for s in self.exclude_fields if s.startswith(prefix))


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


@dataclass(frozen=True)
class Step:
    """One row on a path from the subject: reached through `via` from the previous step."""

    model: str
    pk: object
    via: str  # "" for the subject

    def __str__(self):
        return f"{self.model} {self.pk!r}" if not self.via else f"--{self.via}--> {self.model} {self.pk!r}"


@dataclass(frozen=True)
class Explanation:
    """Why a row is in a plan: its role and the path of relations from a subject."""

    model: str
    pk: object
    role: str  # "owned" | "update" | "reference" | "boundary"
    steps: tuple  # (Step, ...), the subject first, this row last

    def __str__(self):
        return f"{self.model} {self.pk!r} ({self.role}): " + " ".join(str(s) for s in self.steps)


def _freeze(mapping):
    return MappingProxyType({k: frozenset(v) for k, v in mapping.items() if v})


def _freeze_keys(mapping):
    return MappingProxyType({k: KeySet.of(v) for k, v in mapping.items() if v})


@dataclass(frozen=True)
class Plan:
    """The result of a walk. Containers are keyed by concrete model label."""

    subjects: tuple  # ((label, pk), ...)
    using: str
    scope: Scope
    owned: MappingProxyType  # {label: KeySet(pk)}
    updates: MappingProxyType  # {label: {field name: KeySet(pk)}}
    references: MappingProxyType  # {label: KeySet(pk)}
    boundary: MappingProxyType  # {label: KeySet(pk)}
    blockers: tuple  # (Blocker, ...)
    via: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # {label: frozenset("Src.relation")}
    queries: int = 0
    edges: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # {role: {label: frozenset(Edge)}}
    extra: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # {label: KeySet(pk)} rows the scope adds

    def counts(self):
        """Return {"owned": {label: n}, "updates": {...}, "references": {...}}."""
        return {
            "owned": {k: len(v) for k, v in sorted(self.owned.items())},
            "updates": {
                k: len(EMPTY.union(*v.values())) for k, v in sorted(self.updates.items())
            },
            "references": {k: len(v) for k, v in sorted(self.references.items())},
        }

    @property
    def total_owned(self):
        return sum(len(v) for v in self.owned.values())

    def owns(self, model_label, pk):
        return pk in self.owned.get(model_label, ())

    def role_of(self, model_label, pk):
        """Return "owned", "update", "reference", "boundary" or None for one row."""
        if pk in self.owned.get(model_label, ()):
            return "owned"
        if any(pk in pks for pks in self.updates.get(model_label, {}).values()):
            return "update"
        if pk in self.references.get(model_label, ()):
            return "reference"
        if pk in self.boundary.get(model_label, ()):
            return "boundary"
        return None

    def tree(self):
        """Return the owned models as a tree: [(depth, label, relation, rows)], depth first.

        The subjects' models are the roots. Each model appears once, under
        the owned model that reached it first in a breadth-first pass;
        `relation` is that edge's name ("" for a root, "(scope)" for rows
        only the scope's soft relations reach). This is a read-only
        operation and sends no query.
        """
        children = defaultdict(set)  # {source label: {(edge name, target label)}}
        for target, es in self.edges.get("owned", {}).items():
            for e in es:
                if e.source != target:
                    children[e.source].add((e.name, target))
        roots = list(dict.fromkeys(lb for lb, _ in self.subjects))
        parent = {lb: None for lb in roots}  # {label: (parent label, edge name)}
        queue = deque(roots)
        while queue:
            lb = queue.popleft()
            for name, target in sorted(children.get(lb, ())):
                if target not in parent:
                    parent[target] = (lb, name)
                    queue.append(target)
        kids = defaultdict(list)  # {label: [(edge name, child label)]}
        for lb, link in parent.items():
            if link is not None:
                kids[link[0]].append((link[1], lb))
        out = []

        def visit(lb, depth, via):
            out.append((depth, lb, via, len(self.owned.get(lb, ()))))
            for name, child in sorted(kids[lb]):
                visit(child, depth + 1, name)

        for lb in roots:
            visit(lb, 0, "")
        out += [(0, lb, "(scope)", len(pks)) for lb, pks in sorted(self.owned.items()) if lb not in parent]
        return out

    def explain(self, model, pk, *, limit=10_000):
        """Return the Explanation of one row: its role and a path from a subject.

        This is a read-only operation: it queries the rows along the plan's
        relations (a few queries per step). Raise ObjectSpecError when the row
        is not in the plan.
        """
        return _explain(self, model, pk, limit)


def _pk_value(model, pk):
    if isinstance(pk, list):
        pk = tuple(pk)
    if isinstance(pk, tuple):
        fields = getattr(model._meta.pk, "fields", ())
        return tuple(f.to_python(v) for f, v in zip(fields, pk)) if fields else pk
    try:
        return model._meta.pk.to_python(pk)
    except Exception:  # noqa: BLE001
        raise ObjectSpecError(f"{pk!r} is not a valid primary key for {model._meta.label}") from None


def _explain(plan, model, pk, limit):
    if isinstance(model, str):
        model = _model(model, "explain")
    lb = relations.label(model)
    pk = _pk_value(model._meta.concrete_model, pk)
    role = plan.role_of(lb, pk)
    if role is None:
        raise ObjectSpecError(f"{lb} {pk!r} is not in the plan (database {plan.using!r})")
    subjects = set(plan.subjects)
    start = (lb, pk)
    prev = {start: None}  # {(label, pk): ((label, pk), edge) it was reached from}
    queue = deque([(start, role)])
    follower = Follower(plan.using, conf.get("BATCH_SIZE"))
    found = start if start in subjects else None
    while queue and found is None and len(prev) < limit:
        (node_label, node_pk), node_role = queue.popleft()
        for edge in sorted(plan.edges.get(node_role, {}).get(node_label, ()), key=lambda e: (e.source, e.name)):
            for src in sorted(follower.sources(edge, node_pk), key=sort_key):
                key = (edge.source, src)
                if key in prev:
                    continue
                if src in plan.owned.get(edge.source, ()):
                    src_role = "owned"
                elif node_role in ("reference", "boundary") and src in plan.references.get(edge.source, ()):
                    src_role = "reference"
                else:
                    continue
                prev[key] = ((node_label, node_pk), edge)
                if key in subjects:
                    found = key
                    break
                queue.append((key, src_role))
            if found is not None:
                break
    if found is None:
        raise ObjectSpecError(f"{lb} {pk!r}: no path from the subject found within {limit} rows")
    steps = [Step(found[0], found[1], "")]
    node = found
    while node != start:
        nxt, edge = prev[node]  # `node` reaches `nxt` through `edge`
        steps.append(Step(nxt[0], nxt[1], edge.name))
        node = nxt
    return Explanation(model=lb, pk=pk, role=role, steps=tuple(steps))


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


def cascade_edges(model):
    """Return ((Edge, kind), ...) of what deleting rows of `model` reaches, as the Collector sees it."""
    return _cascade_edges(model._meta.concrete_model)


def _cascade_edges_uncached(model):
    model_label = relations.label(model)
    out = []
    # Multi-table inheritance: deleting a child deletes its parent rows.
    for parent, ptr in model._meta.parents.items():
        if ptr is not None:
            out.append((Edge("parent", model_label, relations.label(parent), f"{model_label}.{ptr.name}", ptr), "cascade"))
    for rel in relations.reverse_relations(model):
        kind = _on_delete_kind(rel.on_delete)
        if kind == "nothing":
            continue
        related_label = relations.label(rel.related_model)
        fk = rel.field
        out.append((Edge("reverse", model_label, related_label, f"{related_label}.{fk.name}", fk), kind))
    for grel in relations.generic_relations(model):
        related_label = relations.label(grel.related_model)
        out.append((Edge("generic", model_label, related_label, f"{model_label}.{grel.name}", grel), "cascade"))
    return tuple(out)


_cascade_cache = {}


def _cascade_edges(model):
    if model not in _cascade_cache:
        _cascade_cache[model] = _cascade_edges_uncached(model)
    return _cascade_cache[model]


def scope_edges(scope, model_label):
    """Return the Edges a scope adds from owned rows of `model_label` (owned relations, soft relations)."""
    out = []
    for spec in sorted(scope.owned_relations):
        source_label, _, name = spec.rpartition(".")
        if source_label != model_label:
            continue
        model = relations.get_model(source_label)
        f = model._meta.get_field(name)
        if f.many_to_many:
            out.append(Edge("m2m", model_label, relations.label(f.related_model), spec, f))
        elif f.concrete:  # forward FK / O2O
            out.append(Edge("forward", model_label, relations.label(f.related_model), spec, f))
        elif hasattr(f, "bulk_related_objects"):  # GenericRelation
            out.append(Edge("generic", model_label, relations.label(f.related_model), spec, f))
        else:  # reverse FK / O2O
            related_label = relations.label(f.related_model)
            out.append(Edge("reverse", model_label, related_label, f"{related_label}.{f.field.name}", f.field))
    for soft in scope.soft_relations:
        if soft.target and soft.target != model_label:
            continue
        holder = relations.get_model(soft.model)
        column = holder._meta.get_field(soft.field)
        ct_field = holder._meta.get_field(soft.content_type) if soft.content_type else None
        out.append(Edge("soft", model_label, soft.model, str(soft), column, ct_field))
    return out


def _empty():
    return EMPTY


class _Walker:
    def __init__(self, using, scope, batch_size, lock=False):
        self.using = using
        self.scope = scope
        self.forbidden = scope.forbidden
        self.lock = lock
        self.follow = Follower(using, batch_size)
        # Key sets are KeySets (compact for integer pks); `|=` rebinds.
        self.owned = defaultdict(_empty)  # {label: KeySet(pk)}
        self.updates = defaultdict(lambda: defaultdict(_empty))  # {label: {field: KeySet(pk)}}
        self.protected = defaultdict(_empty)  # {(label, field): KeySet(pk)}
        self.restricted = defaultdict(_empty)  # {(label, field): KeySet(pk)}
        self.boundary = defaultdict(_empty)  # {label: KeySet(pk)}
        self.cascade_boundary = defaultdict(_empty)  # {label: KeySet(pk)} boundary rows a delete would remove
        self.references = defaultdict(_empty)  # {label: KeySet(pk)}
        self.extra = defaultdict(_empty)  # {label: KeySet(pk)} rows the scope adds (erase hands them to the Collector)
        self.edges = defaultdict(lambda: defaultdict(set))  # {role: {label: {Edge}}}
        self.subject_keys = set()

    @property
    def queries(self):
        return self.follow.queries

    def qs(self, model):
        return self.follow.qs(model)

    def values(self, qs, *fields):
        return self.follow.values(qs, *fields)

    def split_boundary(self, edge, pks, cascade):
        """Drop rows of a forbidden model from `pks`; record them as keys."""
        if edge.target not in self.forbidden:
            return pks
        outside = KeySet(pk for pk in pks if (edge.target, pk) not in self.subject_keys)
        if outside:
            self.boundary[edge.target] |= outside
            self.edges["boundary"][edge.target].add(edge)
            if cascade:
                self.cascade_boundary[edge.target] |= outside
        return KeySet.of(pks) - outside

    # -- owned set: what deletion removes --------------------------------
    def walk_owned(self, roots):
        # The Collector takes one model at a time and skips the rows it holds
        # already, so for subjects of several models what it deletes can
        # depend on the order of the collect() calls (a multi-table parent
        # gathered first as a parent keeps its generic rows, see
        # cascade_from). erase.collect() calls it in label order: walk the
        # subjects the same way, one model after the other.
        by_label = defaultdict(list)  # {label: [pk, ...]}
        for model_label, pk in roots:
            by_label[model_label].append(pk)
        for model_label in sorted(by_label):
            self._walk_owned_from(model_label, KeySet(by_label[model_label]))

    def _walk_owned_from(self, root_label, root_pks):
        frontier = defaultdict(_empty)  # {label: KeySet(pk)}
        parents = defaultdict(_empty)  # {label: KeySet(pk)} reached as a multi-table parent (see cascade_from)
        frontier[root_label] = root_pks
        pending = defaultdict(_empty)  # {label: KeySet(pk)} owned rows whose scope edges are not followed yet
        while frontier or parents:
            while frontier or parents:
                model_label = next(iter(frontier or parents))
                # A row is walked the way it is first reached, as the Collector
                # skips a row it already holds; reached both ways at once, it
                # is walked as itself.
                new = frontier.pop(model_label, EMPTY) - self.owned[model_label]
                as_parent = parents.pop(model_label, EMPTY) - self.owned[model_label] - new
                if not new and not as_parent:
                    continue
                self.owned[model_label] |= new | as_parent
                pending[model_label] |= new | as_parent
                model = relations.get_model(model_label)
                if new:
                    self.cascade_from(model, new, frontier, parents)
                if as_parent:
                    self.cascade_from(model, as_parent, frontier, parents, as_parent=True)
            # The scope's additions: rows reached from owned rows through its
            # owned and soft relations, then what deleting them cascades to.
            for model_label in sorted(pending):
                pks = pending[model_label]
                for edge in scope_edges(self.scope, model_label):
                    found = self.follow.targets(edge, pks) - self.owned[edge.target]
                    found = self.split_boundary(edge, found, cascade=True)
                    if found:
                        self.edges["owned"][edge.target].add(edge)
                        self.extra[edge.target] |= found
                        frontier[edge.target] |= found
            pending.clear()

    def cascade_from(self, model, pks, frontier, parents, as_parent=False):
        """Follow the Collector's relations from rows `pks` of `model`, adding to `frontier` (`parents`).

        `as_parent`: the rows are the multi-table parents of rows being
        deleted, which the Collector gathers without their related objects
        (collect_related=False). Their reverse FKs are still followed, as the
        Collector follows them from the child (its _meta holds its parents'
        reverse relations), but not their GenericRelations: the child has its
        own copies, with the child's content type, and a generic row naming
        the parent's content type stays. Nor their parent links to other
        children, which the child's _meta leaves out.
        """
        for edge, kind in cascade_edges(model):
            if as_parent and (edge.kind == "generic" or (edge.kind == "reverse" and edge.field.remote_field.parent_link)):
                continue
            found = self.follow.targets(edge, pks)
            if not found:
                continue
            if kind == "cascade":
                found = self.split_boundary(edge, found, cascade=True)
                if found:
                    self.edges["owned"][edge.target].add(edge)
                    (parents if edge.kind == "parent" else frontier)[edge.target] |= found
            elif kind == "update":
                self.updates[edge.target][edge.field.name] |= found
                self.edges["update"][edge.target].add(edge)
            elif kind == "protect":
                self.protected[edge.target, edge.field.name] |= found
            elif kind == "restrict":
                self.restricted[edge.target, edge.field.name] |= found

    # -- references: the forward dependency closure ----------------------
    def walk_references(self):
        frontier = dict(self.owned)  # {label: KeySet(pk)} (KeySets are immutable: no copy)
        seen = defaultdict(_empty)
        while frontier:
            model_label = next(iter(frontier))
            pks = frontier.pop(model_label) - seen[model_label]
            if not pks:
                continue
            seen[model_label] |= pks
            model = relations.get_model(model_label)
            for edge, target_pks in self.forward_targets(model, pks):
                new = KeySet.of(target_pks) - self.owned.get(edge.target, EMPTY)
                if edge.target in self.forbidden:
                    if new:
                        self.boundary[edge.target] |= new
                        self.edges["boundary"][edge.target].add(edge)
                    continue
                if new:
                    self.edges["reference"][edge.target].add(edge)
                new -= self.references[edge.target]
                if new:
                    self.references[edge.target] |= new
                    frontier[edge.target] = frontier.get(edge.target, EMPTY) | new

    def forward_targets(self, model, pks):
        """Yield (Edge, pks) of rows that `pks` of `model` point to: one query per chunk for all FKs."""
        fks = relations.forward_fks(model)
        gfks = relations.generic_foreign_keys(model)
        if not fks and not gfks:
            return
        columns = [f.attname for f in fks]
        for _, ct_field, fk_field in gfks:
            columns += [ct_field.attname, fk_field.attname]
        targets = defaultdict(KeySetBuilder)  # {field index: values}
        generic = defaultdict(lambda: defaultdict(set))  # {gfk index: {content type id: {object id}}}
        for chunk in query_chunks(pks, self.follow.batch):
            rows = self.values(self.qs(model).filter(key_filter("pk", chunk)), *columns)
            if len(fks) == 1 and not gfks:  # the common case, per row: one column into one builder
                targets[0].extend(v for (v,) in rows if v is not None)
                continue
            for row in rows:
                for i in range(len(fks)):
                    if row[i] is not None:
                        targets[i].add(row[i])
                for j in range(len(gfks)):
                    ct_id, obj_id = row[len(fks) + 2 * j], row[len(fks) + 2 * j + 1]
                    if ct_id is not None and obj_id is not None:
                        generic[j][ct_id].add(obj_id)
        model_label = relations.label(model)
        for i, builder in targets.items():
            values = builder.build()
            if not values:  # the column is NULL in every row
                continue
            f = fks[i]
            edge = Edge("forward", model_label, relations.label(f.related_model), f"{model_label}.{f.name}", f)
            yield edge, self.follow.forward_pks(f, values)
        from django.contrib.contenttypes.models import ContentType

        for j, by_ct in generic.items():
            gfk = gfks[j][0]
            for ct_id, obj_ids in by_ct.items():
                target = ContentType.objects.db_manager(self.using).get_for_id(ct_id).model_class()
                if target is None:  # a stale content type: nothing to export
                    continue
                target = target._meta.concrete_model
                edge = Edge("gfk", model_label, relations.label(target), f"{model_label}.{gfk.name}", gfk)
                yield edge, self.follow.existing(target, obj_ids)

    def blockers(self):
        result = []
        for (model_label, fname), pks in sorted(self.protected.items()):
            result.append(Blocker("protect", model_label, fname, tuple(sorted(pks, key=sort_key))))
        for (model_label, fname), pks in sorted(self.restricted.items()):
            left = pks - self.owned.get(model_label, EMPTY)
            if left:
                result.append(Blocker("restrict", model_label, fname, tuple(sorted(left, key=sort_key))))
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
            keys.append((relations.label(model), tuple(pk) if isinstance(pk, list) else pk))
    return tuple(keys)


def walk(objects, *, scope=None, using="default", batch_size=None, lock=False):
    """Walk `objects` (instances, or (model or label, pk) pairs) into a Plan.

    This is a read-only operation, and every query goes to database `using`.
    Missing subjects raise ObjectSpecError. With `lock=True` (inside a
    transaction) every row of the owned set and every row erasure would
    change is locked FOR UPDATE as it is found.
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
        for chunk in chunks(pks, batch_size):
            found |= {v for (v,) in walker.values(walker.qs(model).filter(key_filter("pk", chunk)), "pk")}
        missing = pks - found
        if missing:
            raise ObjectSpecError(
                f"{model_label} has no object with pk {', '.join(repr(m) for m in sorted(missing, key=sort_key))}"
                f" (database {using!r})"
            )
    walker.follow.lock = lock  # lock what the owned walk reads (erase's guard)
    walker.walk_owned(roots)
    walker.follow.lock = False
    walker.walk_references()
    updates = {}
    for model_label, per_field in walker.updates.items():
        owned = walker.owned.get(model_label, EMPTY)
        kept = {f: pks - owned for f, pks in per_field.items() if pks - owned}
        if kept:
            updates[model_label] = MappingProxyType(kept)
    blockers = list(walker.blockers())
    for model_label, pks in sorted(walker.cascade_boundary.items()):
        # Deleting the subject would delete these too, but the scope forbids
        # exporting them: erasure must refuse.
        blockers.append(Blocker("boundary", model_label, "", tuple(sorted(pks, key=sort_key))))
    edges = {role: _freeze(per_label) for role, per_label in walker.edges.items()}
    via = defaultdict(set)
    for role in ("owned", "reference"):
        for model_label, es in walker.edges.get(role, {}).items():
            via[model_label] |= {e.name for e in es}
    extra = {k: v - {pk for lb, pk in roots if lb == k} for k, v in walker.extra.items()}
    return Plan(
        subjects=roots,
        using=using,
        scope=scope,
        owned=_freeze_keys(walker.owned),
        updates=MappingProxyType(updates),
        references=_freeze_keys(walker.references),
        boundary=_freeze_keys(walker.boundary),
        blockers=tuple(blockers),
        via=_freeze(via),
        queries=walker.queries,
        edges=MappingProxyType(edges),
        extra=_freeze_keys(extra),
    )
