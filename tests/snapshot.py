"""Take every row of every table, field for field, to compare databases."""
from django.apps import apps

from gestore_retention.graph import relations
from gestore_retention.records import ModelCodec

APPS = ("demoapp", "auth", "contenttypes")


def snapshot(using="default", app_labels=APPS):
    """Return {label: {pk: {field: json value}}} for every concrete model of `app_labels`."""
    out = {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.app_label not in app_labels or model._meta.proxy:
            continue
        codec = ModelCodec.of(model)
        qs = model._base_manager.using(using)
        pks = list(qs.values_list("pk", flat=True))
        # A composite pk is a JSON list in records: key it as a tuple here.
        out[relations.label(model)] = {
            (tuple(pk) if isinstance(pk, list) else pk): fields for pk, fields in codec.fetch(qs, pks, 1000)
        }
    return out


def diff(before, after):
    """Return a short description of the differences between two snapshots."""
    lines = []
    for label in sorted(set(before) | set(after)):
        b, a = before.get(label, {}), after.get(label, {})
        for pk in sorted(set(b) | set(a), key=str):
            if b.get(pk) != a.get(pk):
                lines.append(f"{label} {pk!r}: {b.get(pk)!r} != {a.get(pk)!r}")
    return lines
