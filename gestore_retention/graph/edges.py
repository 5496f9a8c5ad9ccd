"""Edges of the walk: one relation between two concrete models, followed both ways.

An Edge knows how to go *forward* (the rows a chunk of source rows reaches:
one query per chunk) and *backward* (the source rows that reach one target
row: what `Plan.explain` needs). Edges are small, frozen and hashable, so a
Plan keeps only the set of edges per model, never per row.

Kinds (source -> target):

* "parent":  a multi-table child -> its parent row (the parent link)
* "reverse": a row -> the rows whose FK points at it (reverse FK / O2O)
* "generic": a row -> the rows of a GenericRelation on its model
* "forward": a row -> the row its FK / O2O points at
* "gfk":     a row -> the row its GenericForeignKey points at
* "m2m":     a row -> the rows on the far side of a many-to-many field
* "soft":    a row -> the rows whose plain column (an integer tenant id, a
             content type + text object pk pair) holds its pk
"""
from dataclasses import dataclass
from dataclasses import field as dc_field

from django.contrib.contenttypes.models import ContentType
from django.db import connections

from . import relations
from .keys import EMPTY, KeySet, KeySetBuilder, key_filter, sort_key


@dataclass(frozen=True)
class Edge:
    kind: str
    source: str  # label of the rows the walk comes from
    target: str  # label of the rows it reaches
    name: str  # the relation as written in errors and explanations: "demoapp.Project.org"
    field: object = dc_field(default=None, compare=False, hash=False, repr=False)
    ct_field: object = dc_field(default=None, compare=False, hash=False, repr=False)  # generic pairs

    def __str__(self):
        return self.name


def _prep(column, pk):
    """Return `pk` as the value the column stores (a text object id holds "5" for 5)."""
    if isinstance(pk, tuple):
        return pk
    try:
        return column.to_python(pk)
    except Exception:  # noqa: BLE001  (a value the column cannot hold matches nothing)
        return None


class Follower:
    """Run edges against one database alias, counting queries."""

    def __init__(self, using, batch_size, lock=False):
        self.using = using
        self.batch = batch_size
        self.queries = 0
        self.lock = lock  # the walk turns it on for the owned set when asked to lock

    def qs(self, model):
        """Rows of `model` as the Collector sees them (base manager).

        With `lock` on, SELECT ... FOR UPDATE on the rows found (PostgreSQL,
        MySQL/MariaDB) reads the latest committed rows and blocks inserts
        whose foreign key points at them until the transaction ends, so the
        owned set cannot grow behind the erase guard. SQLite ignores it (its
        writer lock already serialises the erase).
        """
        qs = model._base_manager.using(self.using)
        return qs.select_for_update() if self.lock else qs

    def values(self, qs, *fields):
        """Yield the rows of `qs.values_list(*fields)` without holding the whole result.

        PostgreSQL and SQLite stream the one query through a cursor
        (`iterator()`: a server-side cursor on PostgreSQL). PyMySQL buffers a
        whole result, so on MySQL/MariaDB the query is keyset-paginated on the
        primary key instead, one page in memory at a time; a page holds one
        row more than a chunk of keys, so a query filtered by a chunk of pks
        takes one page. Each query or page counts as one query. (Paginating
        everywhere made PostgreSQL read `fk IN (...) ORDER BY pk LIMIT n`
        through the pk index, rereading the table for every page.)
        """
        page = self.batch + 1
        composite = getattr(qs.model._meta.pk, "fields", None)
        if composite or connections[self.using].vendor != "mysql":
            self.queries += 1
            yield from qs.values_list(*fields).iterator(chunk_size=max(page, 2000))
            return
        qs = qs.order_by("pk")
        last = None
        while True:
            self.queries += 1
            rows = list((qs if last is None else qs.filter(pk__gt=last)).values_list("pk", *fields)[:page])
            for row in rows:
                yield row[1:]
            if len(rows) < page:
                return
            last = rows[-1][0]

    def keys(self, qs, field="pk"):
        """Return the KeySet of the non-null values of one column over `qs`."""
        builder = KeySetBuilder()
        builder.extend(v for (v,) in self.values(qs, field) if v is not None)
        return builder.build()

    def ct(self, model, for_concrete_model=True):
        return ContentType.objects.db_manager(self.using).get_for_model(
            model, for_concrete_model=for_concrete_model
        )

    def chunks(self, values):
        """Lists of at most a batch of keys (for code that needs the keys themselves)."""
        return chunks(values, self.batch)

    def query_chunks(self, values):
        """Chunks to filter one query on: a run of consecutive keys is one range, however long."""
        return query_chunks(values, self.batch)

    # -- forward: source pks -> target pks ---------------------------------
    def targets(self, edge, pks):
        """Return the pks of `edge.target` rows that source rows `pks` reach."""
        return getattr(self, f"_fwd_{edge.kind}")(edge, pks)

    def _fwd_parent(self, edge, pks):
        ptr = edge.field
        if ptr.primary_key:
            if self.lock:  # found without a query: lock the parent rows too
                parent = relations.get_model(edge.target)
                for chunk in self.query_chunks(pks):
                    self.keys(self.qs(parent).filter(key_filter("pk", chunk)))
            return KeySet.of(pks)
        child = relations.get_model(edge.source)
        return _union(self.keys(self.qs(child).filter(key_filter("pk", chunk)), ptr.attname)
                      for chunk in self.query_chunks(pks))

    def column_values(self, model, pks, column):
        """Yield chunks of the values `column` holds for rows `pks` of `model`."""
        if column.primary_key or column is model._meta.pk:
            yield from self.query_chunks(pks)
            return
        for chunk in self.query_chunks(pks):
            vals = self.keys(self.qs(model).filter(key_filter("pk", chunk)), column.attname)
            yield from self.query_chunks(vals)

    def _fwd_reverse(self, edge, pks):
        fk = edge.field
        source = relations.get_model(edge.source)
        related = relations.get_model(edge.target)
        return _union(self.keys(self.qs(related).filter(key_filter(fk.attname, chunk)))
                      for chunk in self.column_values(source, pks, fk.target_field))

    def _fwd_soft(self, edge, pks):
        column = edge.field
        related = relations.get_model(edge.target)
        filters = {}
        if edge.ct_field is not None:
            filters[edge.ct_field.attname] = self.ct(relations.get_model(edge.source)).pk
        found = []
        for chunk in self.chunks(pks):
            ids = [v for v in (_prep(column, pk) for pk in chunk) if v is not None]
            if ids:
                found.append(self.keys(self.qs(related).filter(key_filter(column.attname, ids), **filters)))
        return _union(found)

    def _fwd_generic(self, edge, pks):
        grel = edge.field
        related = relations.get_model(edge.target)
        ct = self.ct(grel.model, for_concrete_model=grel.for_concrete_model)
        ct_att = related._meta.get_field(grel.content_type_field_name).attname
        fk_field = related._meta.get_field(grel.object_id_field_name)
        found = []
        for chunk in self.chunks(pks):
            ids = [v for v in (_prep(fk_field, pk) for pk in chunk) if v is not None]
            if ids:
                found.append(self.keys(self.qs(related).filter(key_filter(fk_field.attname, ids), **{ct_att: ct.pk})))
        return _union(found)

    def _fwd_forward(self, edge, pks):
        f = edge.field
        source = relations.get_model(edge.source)
        values = _union(self.keys(self.qs(source).filter(key_filter("pk", chunk)), f.attname)
                        for chunk in self.query_chunks(pks))
        return self.forward_pks(f, values)

    def forward_pks(self, f, values):
        """Return the pks of the rows FK `f` points at, given the values it holds.

        An FK to the pk holds the target's pk, so no query is needed; but an
        FK declared with db_constraint=False may name a row that is gone, and
        a plan lists rows, not values: those are checked like generic ids.
        """
        if f.target_field.primary_key:
            if not f.db_constraint:
                return self.existing(f.related_model._meta.concrete_model, values)
            return KeySet.of(values)
        target = f.related_model._meta.concrete_model
        return _union(self.keys(self.qs(target).filter(key_filter(f.target_field.attname, chunk)))
                      for chunk in self.query_chunks(values))

    def _fwd_gfk(self, edge, pks):
        source = relations.get_model(edge.source)
        target = relations.get_model(edge.target)
        gfk = edge.field
        ct_field = source._meta.get_field(gfk.ct_field)
        fk_field = source._meta.get_field(gfk.fk_field)
        ids = _union(self.keys(self.qs(source).filter(key_filter("pk", chunk), **{ct_field.attname: self.ct(target).pk}),
                               fk_field.attname) for chunk in self.query_chunks(pks))
        return self.existing(target, ids)

    def existing(self, target, object_ids):
        """Return the pks of `target` rows among generic object ids (stale ids drop out)."""
        pk_field = target._meta.pk
        wanted = KeySetBuilder()
        for v in object_ids:
            try:
                wanted.add(pk_field.to_python(v))
            except Exception:  # noqa: BLE001, S112  (an id that cannot be a pk points at nothing)
                continue
        return _union(self.keys(self.qs(target).filter(key_filter("pk", chunk)))
                      for chunk in self.query_chunks(wanted.build()))

    def _fwd_m2m(self, edge, pks):
        through, src_fk, tgt_fk = relations.m2m_columns(edge.field)
        found = _union(self.keys(self.qs(through).filter(key_filter(src_fk.attname, chunk)), tgt_fk.attname)
                       for chunk in self.column_values(relations.get_model(edge.source), pks, src_fk.target_field))
        return self.forward_pks(tgt_fk, found)

    # -- backward: one target pk -> source pks (Plan.explain) -----------------
    def sources(self, edge, pk):
        """Return the pks of `edge.source` rows that reach target row `pk` through `edge`."""
        return getattr(self, f"_back_{edge.kind}")(edge, pk)

    def _one(self, model, pk, attname):
        row = next(iter(self.values(self.qs(model).filter(pk=pk), attname)), None)
        return row[0] if row else None

    def _rows_with(self, model, **filters):
        return self.keys(self.qs(model).filter(**filters))

    def _back_parent(self, edge, pk):
        return self._rows_with(relations.get_model(edge.source), **{edge.field.attname: pk})

    def _back_reverse(self, edge, pk):
        fk = edge.field
        value = self._one(relations.get_model(edge.target), pk, fk.attname)
        if value is None:
            return EMPTY
        return self._rows_with(relations.get_model(edge.source), **{fk.target_field.attname: value})

    def _back_soft(self, edge, pk):
        value = self._one(relations.get_model(edge.target), pk, edge.field.attname)
        return self.existing(relations.get_model(edge.source), [value]) if value is not None else EMPTY

    def _back_generic(self, edge, pk):
        grel = edge.field
        related = relations.get_model(edge.target)
        value = self._one(related, pk, related._meta.get_field(grel.object_id_field_name).attname)
        return self.existing(relations.get_model(edge.source), [value]) if value is not None else EMPTY

    def _back_forward(self, edge, pk):
        f = edge.field
        value = pk if f.target_field.primary_key else self._one(relations.get_model(edge.target), pk, f.target_field.attname)
        return self._rows_with(relations.get_model(edge.source), **{f.attname: value})

    def _back_gfk(self, edge, pk):
        source = relations.get_model(edge.source)
        gfk = edge.field
        ct_att = source._meta.get_field(gfk.ct_field).attname
        fk_field = source._meta.get_field(gfk.fk_field)
        return self._rows_with(source, **{ct_att: self.ct(relations.get_model(edge.target)).pk,
                                          fk_field.attname: _prep(fk_field, pk)})

    def _back_m2m(self, edge, pk):
        through, src_fk, tgt_fk = relations.m2m_columns(edge.field)
        value = pk if tgt_fk.target_field.primary_key else self._one(
            relations.get_model(edge.target), pk, tgt_fk.target_field.attname)
        src_values = self.keys(self.qs(through).filter(**{tgt_fk.attname: value}), src_fk.attname)
        source = relations.get_model(edge.source)
        if src_fk.target_field.primary_key:
            return src_values
        return self._rows_with(source, **{f"{src_fk.target_field.attname}__in": list(src_values)})


def query_chunks(values, size):
    """Yield chunks of `values` to filter one query each on (KeySet.query_chunks; lists of `size` otherwise)."""
    if isinstance(values, KeySet):
        yield from values.query_chunks(size)
    else:
        yield from chunks(values, size)


def chunks(values, size):
    """Yield lists of at most `size` of `values`, in key order (a KeySet is not copied)."""
    if isinstance(values, KeySet):
        yield from values.chunks(size)
        return
    values = sorted(values, key=sort_key)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _union(keysets):
    """Return the union of KeySets (built once, not pairwise)."""
    builder = KeySetBuilder()
    for ks in keysets:
        builder.update(ks)
    return builder.build()
