"""Legal holds: marks that forbid erasing a subject (GDPR Art. 17(3)).

A hold names a subject by model label and primary key. Placing or releasing
one appends exactly one audit event in the same transaction, so the log and
the holds never disagree. Policy selections leave held subjects out in SQL
(`exclude_held`), and a hold on a model also covers its proxies and its
multi-table-inheritance children with the same primary key.
"""
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connections, models, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Cast, Replace
from django.utils import timezone

from gestore_retention import audit, conf
from gestore_retention.errors import ObjectSpecError
from gestore_retention.models import LegalHold


def _model(subject_label):
    try:
        return apps.get_model(subject_label)
    except (LookupError, ValueError, TypeError):
        raise ObjectSpecError(f'unknown model "{subject_label}" (expected "app_label.Model")') from None


def subject_key(subject_label, subject_pk):
    """Return (label, pk text) as holds and audit events store them; raise ObjectSpecError.

    The label is the model's `_meta.label`; the pk goes through the pk
    field's `to_python`, so "05" and 5 name the same subject and UUIDs keep
    one spelling.
    """
    model = _model(subject_label)
    try:
        value = model._meta.pk.to_python(subject_pk)
    except ValidationError:
        raise ObjectSpecError(
            f'{model._meta.label}.{subject_pk}: "{subject_pk}" is not a valid primary key '
            f'for {model._meta.label}') from None
    if value is None or value == "":
        raise ObjectSpecError(f"{model._meta.label}: an empty primary key names nothing")
    return model._meta.label, str(value)


def hold_labels(model):
    """Labels under which a hold protects instances of `model`.

    The model itself, its concrete model (for proxies) and its multi-table
    parents (which share the child's primary key).
    """
    labels = {model._meta.label, model._meta.concrete_model._meta.label}
    labels.update(parent._meta.label for parent in model._meta.get_parent_list())
    return sorted(labels)


def _active(label, pk_text, using):
    model = apps.get_model(label)
    return LegalHold.objects.using(using).filter(
        subject_label__in=hold_labels(model), subject_pk=pk_text, released_at__isnull=True
    )


def is_held(subject_label, subject_pk, *, using="default"):
    """Return True if the subject is under an active legal hold. This is a read-only operation."""
    label, pk_text = subject_key(subject_label, subject_pk)
    return _active(label, pk_text, using).exists()


def held_in(plan):
    """Return ["label pk (hold reason)", ...] for held subjects the plan would delete or change.

    A hold protects its subject's row: erasing another subject must not
    delete it (cascade) nor change it (SET_NULL). This is a read-only
    operation (one query for the active holds).
    """
    found = []
    for hold in LegalHold.objects.using(plan.using).filter(released_at__isnull=True).order_by("pk"):
        try:
            model = apps.get_model(hold.subject_label)
            pk = model._meta.pk.to_python(hold.subject_pk)
        except (LookupError, ValueError, ValidationError):
            continue  # a hold on a model that is gone protects nothing here
        label = model._meta.concrete_model._meta.label
        changed = any(pk in pks for pks in plan.updates.get(label, {}).values())
        if plan.owns(label, pk) or changed:
            found.append(f"{label} {hold.subject_pk} (hold: {hold.reason})")
    return found


def place_hold(subject_label, subject_pk, *, reason, now=None, using="default"):
    """Place a legal hold on an existing subject and audit it ("hold-placed"); return the LegalHold.

    `reason` is a case reference, not personal data. Placing the same hold
    (same subject, same reason) again changes nothing and returns the
    active one without a new event.
    """
    label, pk_text = subject_key(subject_label, subject_pk)
    if not isinstance(reason, str) or not reason.strip():
        raise ObjectSpecError(f"{label}.{pk_text}: a hold needs a reason (a case reference)")
    if len(reason) > LegalHold._meta.get_field("reason").max_length:
        raise ObjectSpecError(f"{label}.{pk_text}: reason is longer than 200 characters")
    model = apps.get_model(label)
    now = now or timezone.now()
    with transaction.atomic(using=using):
        if not model._base_manager.using(using).filter(pk=model._meta.pk.to_python(pk_text)).exists():
            raise ObjectSpecError(f"{label}.{pk_text}: no such object")
        existing = LegalHold.objects.using(using).filter(
            subject_label=label, subject_pk=pk_text, reason=reason, released_at__isnull=True
        ).order_by("pk").first()
        if existing is not None:
            return existing
        hold = LegalHold.objects.using(using).create(
            subject_label=label, subject_pk=pk_text, reason=reason, placed_at=now
        )
        audit.append("hold-placed", subject_label=label, subject_pk=pk_text,
                     details={"hold": hold.pk}, now=now, using=using)
    return hold


def release_hold(subject_label, subject_pk, *, hold_id=None, now=None, using="default"):
    """Release an active hold on the subject and audit it ("hold-released"); return the LegalHold.

    With several active holds on the subject, `hold_id` says which one: a
    case that ends must not lift another case's hold.
    """
    label, pk_text = subject_key(subject_label, subject_pk)
    now = now or timezone.now()
    with transaction.atomic(using=using):
        active = LegalHold.objects.using(using).select_for_update().filter(
            subject_label=label, subject_pk=pk_text, released_at__isnull=True
        ).order_by("pk")
        if hold_id is not None:
            active = active.filter(pk=hold_id)
        holds = list(active)
        if not holds:
            which = f"hold {hold_id} on " if hold_id is not None else ""
            raise ObjectSpecError(f"{label}.{pk_text}: no active {which}legal hold")
        if len(holds) > 1:
            ids = ", ".join(str(h.pk) for h in holds)
            raise ObjectSpecError(f"{label}.{pk_text}: {len(holds)} active holds ({ids}); pass hold_id")
        hold = holds[0]
        hold.released_at = now
        hold.save(update_fields=["released_at"], using=using)
        audit.append("hold-released", subject_label=label, subject_pk=pk_text,
                     details={"hold": hold.pk}, now=now, using=using)
    return hold


def _pk_text(model, using):
    """(SQL expression of the outer row's pk as text, whether holds must drop dashes), or (None, _)."""
    pk = model._meta.pk
    while pk.is_relation:  # a multi-table child's pk is a one-to-one to its parent
        pk = pk.target_field
    text = Cast(OuterRef("pk"), models.CharField(max_length=200))
    if isinstance(pk, (models.AutoField, models.BigAutoField, models.SmallAutoField,
                       models.IntegerField, models.CharField, models.TextField)):
        return text, False
    if isinstance(pk, models.UUIDField):
        # Without a native uuid type Django stores 32 hex digits, no dashes.
        return text, not connections[using].features.has_native_uuid_field
    return None, False


def exclude_held(queryset, *, using="default"):
    """Return `queryset` without the subjects under an active legal hold.

    Done in SQL (NOT EXISTS over LegalHold with the pk cast to text) for
    integer, text and UUID keys; other key types convert the held keys in
    Python and exclude them in bounded chunks.
    """
    model = queryset.model
    holds = LegalHold.objects.using(using).filter(
        released_at__isnull=True, subject_label__in=hold_labels(model)
    )
    expr, nodash = _pk_text(model, using)
    if expr is not None:
        if nodash:
            holds = holds.annotate(_key=Replace("subject_pk", models.Value("-"), models.Value("")))
            return queryset.filter(~Exists(holds.filter(_key=expr)))
        return queryset.filter(~Exists(holds.filter(subject_pk=expr)))
    pk_field, chunk, size = model._meta.pk, [], conf.get("BATCH_SIZE")
    for raw in holds.values_list("subject_pk", flat=True).iterator():
        try:
            chunk.append(pk_field.to_python(raw))
        except ValidationError:
            continue
        if len(chunk) >= size:
            queryset, chunk = queryset.exclude(pk__in=chunk), []
    return queryset.exclude(pk__in=chunk) if chunk else queryset
