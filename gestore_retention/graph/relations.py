"""Edges of the model graph, per concrete model.

Relation following only *yields* edges; the walk keeps `seen`. Everything
here is computed from `_meta` and cached per model class.
"""
from functools import cache

from django.apps import apps
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation

from ..errors import ObjectSpecError


def label(model):
    """Return the label of the concrete model behind `model` ("app.Model")."""
    return model._meta.concrete_model._meta.label


def get_model(model_label):
    """Return the concrete model for a label such as "demoapp.Organisation" (any case)."""
    try:
        model = apps.get_model(model_label)
    except (LookupError, ValueError):
        raise ObjectSpecError(f"unknown model {model_label!r}") from None
    return model._meta.concrete_model


@cache
def reverse_relations(model):
    """Return the relations whose FK points at `model` itself (not its parents).

    These are the candidates Django's Collector follows on delete: reverse
    one-to-many and one-to-one, including hidden ones (auto-created M2M
    through models, related_name="+").
    """
    model = model._meta.concrete_model
    return tuple(
        rel
        for rel in model._meta.get_fields(include_hidden=True)
        if rel.auto_created
        and not rel.concrete
        and (rel.one_to_one or rel.one_to_many)
        and rel.model._meta.concrete_model is model
    )


@cache
def generic_relations(model):
    """Return the GenericRelation fields declared on `model` or its abstract bases."""
    model = model._meta.concrete_model
    return tuple(f for f in model._meta.private_fields if isinstance(f, GenericRelation))


@cache
def generic_foreign_keys(model):
    """Return (gfk, ct_field, fk_field) for each GenericForeignKey of `model`."""
    model = model._meta.concrete_model
    result = []
    for f in model._meta.private_fields:
        if isinstance(f, GenericForeignKey):
            result.append((f, model._meta.get_field(f.ct_field), model._meta.get_field(f.fk_field)))
    return tuple(result)


@cache
def forward_fks(model):
    """Return the local concrete FK / O2O fields of `model` (parent links included)."""
    model = model._meta.concrete_model
    return tuple(f for f in model._meta.local_concrete_fields if f.is_relation and f.remote_field)


@cache
def local_fields(model):
    """Return the columns of `model`'s own table, as (name, attname, field).

    For a multi-table child this is its own table only; the parent rows are
    records of their own, as in Django's serializers.
    """
    model = model._meta.concrete_model
    return tuple(
        (f.name, f.attname, f)
        for f in model._meta.local_concrete_fields
        if not getattr(f, "generated", False)  # GeneratedField: the database computes it
    )


def is_auto_through(model):
    """True for the hidden through model Django creates for a plain ManyToManyField."""
    return model._meta.auto_created is not False and model._meta.auto_created is not None


def insert_order(model_list):
    """Return `model_list` ordered so that non-nullable FK targets come first.

    Multi-table parents precede their children. Nullable FKs do not constrain
    the order: the restore inserts them as NULL and sets them afterwards when
    their target comes later. Ties break by label so the order is stable.
    """
    models_ = sorted({m._meta.concrete_model for m in model_list}, key=label)
    present = set(models_)
    deps = {m: set() for m in models_}
    for m in models_:
        for f in forward_fks(m):
            target = f.related_model._meta.concrete_model
            if target in present and target is not m and not f.null:
                deps[m].add(target)
    ordered, done, visiting = [], set(), set()

    def visit(m):
        if m in done:
            return
        if m in visiting:  # a cycle of non-nullable FKs: break it here
            return
        visiting.add(m)
        for d in sorted(deps[m], key=label):
            visit(d)
        visiting.discard(m)
        done.add(m)
        ordered.append(m)

    for m in models_:
        visit(m)
    return ordered


@cache
def is_natural_key_model(model):
    """True for models matched by natural key on restore instead of by pk.

    Content types (and permissions, which point at them) are created by
    `migrate` in every database with their own ids.
    """
    return model._meta.label in ("contenttypes.ContentType", "auth.Permission")


def schema_fingerprint(model):
    """Return a short hash of the columns of `model`'s own table."""
    import hashlib

    parts = [label(model)]
    for name, attname, field in local_fields(model):
        parts.append(f"{name}:{attname}:{field.get_internal_type()}:{int(field.null)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def m2m_columns(field):
    """Return (through model, FK to the field's source side, FK to its far side).

    `field` is a ManyToManyField (walked from its model) or a ManyToManyRel
    (walked from the model it points at).
    """
    if field.many_to_many and not field.concrete:  # the reverse side: a ManyToManyRel
        m2m = field.field
        through = m2m.remote_field.through._meta.concrete_model
        return through, through._meta.get_field(m2m.m2m_reverse_field_name()), through._meta.get_field(m2m.m2m_field_name())
    through = field.remote_field.through._meta.concrete_model
    return through, through._meta.get_field(field.m2m_field_name()), through._meta.get_field(field.m2m_reverse_field_name())
