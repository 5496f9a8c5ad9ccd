"""Engine: rows <-> records, with an exact round trip of every field type.

A record has Django's fixture shape, plus a role:

    {"model": "demoapp.project", "pk": 3, "fields": {...}, "role": "owned"}

Roles: "reference" (shared rows a restore needs; created only when missing),
"owned" (rows erasure removes), "update" (old values of the columns erasure
changes; "fields" holds only those columns), "file" (a stored file's bytes,
base64, for a FileField of an owned row). `loaddata` ignores the role, so a
decrypted payload can still be loaded by Django as a last resort.

A record may also carry "json_null": [field name, ...], the JSONFields that
hold the JSON value null rather than SQL NULL (both read as None; loaddata
sees None); and, for content types and permissions, "natural_key". A
composite primary key is a JSON list of its parts.

Foreign keys are written under the field name with the raw column value, as
Django's serializers do; a multi-table child's record holds its own table's
columns and its parent is a record of its own.
"""
import base64
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX, make_password
from django.db import models
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from . import conf
from .errors import BundleError
from .graph import relations
from .graph.walk import _chunks

ROLES = ("reference", "owned", "update", "file")


# -- field codecs -----------------------------------------------------------
def _identity(value):
    return value


def _iso(value):
    return value.isoformat()


def _b64(value):
    return base64.b64encode(bytes(value)).decode("ascii")


def _decimal_out(value):
    # Fixed-point text keeps every digit and never an exponent ("0E-8" -> "0.00000000").
    return format(value, "f")


def _composite(encoders):
    def encode(value):
        return [None if v is None else enc(v) for enc, v in zip(encoders, value)]

    return encode


def encoder(field):
    """Return a function turning a Python value of `field` into a JSON value."""
    if field.is_relation and field.remote_field:
        return encoder(field.target_field)
    internal = field.get_internal_type()
    if internal == "CompositePrimaryKey":  # a JSON list, each part encoded as its field
        return _composite(tuple(encoder(f) for f in field.fields))
    if internal == "DecimalField":
        return _decimal_out
    if internal in ("DateTimeField", "DateField", "TimeField"):
        return _iso
    if internal == "DurationField":
        return duration_string
    if internal == "UUIDField":
        return str
    if internal == "BinaryField":
        return _b64
    if isinstance(field, models.FileField):
        return lambda value: value.name if hasattr(value, "name") else value
    return _identity


def decoder(field):
    """Return a function turning a JSON value back into the Python value of `field`."""
    if field.is_relation and field.remote_field:
        return decoder(field.target_field)
    internal = field.get_internal_type()
    if internal == "CompositePrimaryKey":
        decoders = tuple(decoder(f) for f in field.fields)
        return lambda value: tuple(None if v is None else dec(v) for dec, v in zip(decoders, value))
    if internal == "JSONField":
        return _identity
    if internal == "BinaryField":
        return lambda v: base64.b64decode(v)
    if internal == "DurationField":
        return parse_duration
    if internal == "DecimalField":
        return Decimal
    if isinstance(field, models.FileField):
        return _identity
    return field.to_python


def _encode_row(codecs, row):
    return {name: (None if v is None else enc(v)) for (name, enc), v in zip(codecs, row)}


def _select(qs, chunk):
    """Return (rows of `qs` among the keys `chunk`, the set to keep or None), ordered by pk.

    A chunk of integer keys that fills at least half of its span is read as
    one range (`pk >= first AND pk <= last`) and the rows of other keys in the
    span are dropped by the caller: far cheaper than an IN list of a thousand
    parameters (to compile, to bind, and for the server to plan). Other
    chunks use IN.
    """
    first, last = chunk[0], chunk[-1]
    if type(first) is int and type(last) is int and last - first + 1 <= 2 * len(chunk):  # noqa: E721
        keep = None if last - first + 1 == len(chunk) else set(chunk)
        return qs.filter(pk__gte=first, pk__lte=last).order_by("pk"), keep
    return qs.filter(pk__in=chunk).order_by("pk"), None


def canonical(record):
    """Return the canonical JSON text of a record (what digests are taken over)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- export -----------------------------------------------------------------
@dataclass(frozen=True)
class ModelCodec:
    """How one model's rows become records: columns, encoders, pk encoder.

    `constants` holds the columns a scope excludes: their records carry the
    field's default instead of the stored value, so a restore (or loaddata)
    still gets a complete row.
    """

    model: type
    label_lower: str
    names: tuple  # field names, in column order (pk excluded)
    attnames: tuple
    encoders: tuple
    pk_attname: str
    pk_encoder: object
    constants: tuple = ()  # ((name, json value), ...) excluded fields

    @classmethod
    def of(cls, model, exclude=()):
        model = model._meta.concrete_model
        pk = model._meta.pk
        cols = [(n, a, f) for n, a, f in relations.local_fields(model) if f is not pk and n not in exclude]
        constants = []
        for n, _, f in relations.local_fields(model):
            if n in exclude and f is not pk:
                default = f.get_default() if f.has_default() or not f.null else None
                constants.append((n, None if default is None else encoder(f)(default)))
        return cls(
            model=model,
            label_lower=model._meta.label_lower,
            names=tuple(n for n, _, _ in cols),
            attnames=tuple(a for _, a, _ in cols),
            encoders=tuple(encoder(f) for _, _, f in cols),
            pk_attname=pk.attname,
            pk_encoder=encoder(pk),
            constants=tuple(constants),
        )

    def fetch(self, qs, pks, batch, attnames=None, names=None, encoders=None):
        """Yield (pk, {name: json value}) for `pks`, one query per batch."""
        for pk, fields, _json_null in self.rows(qs, pks, batch, attnames, names, encoders):
            yield pk, fields

    def rows(self, qs, pks, batch, attnames=None, names=None, encoders=None):
        """Yield (pk, {name: json value}, (names holding JSON null, ...)) for `pks`.

        A JSONField can hold SQL NULL or the JSON value null; Python sees None
        for both. A nullable JSON column is read with an IS NULL flag beside
        it, so the two stay apart (records name JSON nulls in "json_null").
        """
        default = attnames is None
        attnames = self.attnames if default else attnames
        names = self.names if names is None else names
        encoders = self.encoders if encoders is None else encoders
        codecs = list(zip(names, encoders))
        constants = dict(self.constants) if default else {}
        json_cols = []  # [(index, name, nullable)]
        for i, attname in enumerate(attnames):
            f = self.model._meta.get_field(names[i])
            if f.get_internal_type() == "JSONField":
                json_cols.append((i, names[i], f.null, attname))
        flags = {f"_sqlnull_{i}": ExpressionWrapper(Q(**{f"{att}__isnull": True}), output_field=BooleanField())
                 for i, _, nullable, att in json_cols if nullable}
        n = len(attnames)
        for chunk in _chunks(pks, batch):
            query, keep = _select(qs, chunk)
            if flags:
                query = query.annotate(**flags)
            for row in query.values_list(self.pk_attname, *attnames, *flags):
                if keep is not None and row[0] not in keep:
                    continue
                fields = _encode_row(codecs, row[1 : n + 1])
                json_null = ()
                if json_cols:
                    sql_null = dict(zip(flags, row[n + 1 :]))
                    json_null = tuple(
                        name for i, name, nullable, _ in json_cols
                        if row[i + 1] is None and not (nullable and sql_null[f"_sqlnull_{i}"])
                    )
                if constants:
                    fields.update(constants)
                yield self.pk_encoder(row[0]), fields, json_null


def _unusable_password():
    return make_password(None)


def default_deny():
    """Return {label_lower: {field name: safe value or callable}} for rows the scope does not own.

    A reference row (shared data the bundle carries so a restore into an
    empty database works) is created with these fields set to safe values
    instead of the bundle's; "*" denies the model's rows altogether. Rows the
    scope owns are restored as they were.
    """
    user = settings.AUTH_USER_MODEL.lower()
    deny = {}
    try:
        user_model = relations.get_model(user)
    except Exception:
        return deny
    names = {f.name for f in user_model._meta.concrete_fields}
    safe = {"is_superuser": False, "is_staff": False, "password": _unusable_password}
    deny[user] = {k: v for k, v in safe.items() if k in names}
    for f in user_model._meta.many_to_many:
        if f.name in ("groups", "user_permissions"):
            deny[f.remote_field.through._meta.label_lower] = {"*": None}
    return deny


class Export:
    """Stream a Plan's rows as records.

    Iterate `records()` once; afterwards `counts` ({role: {label: n}}),
    `digest` (SHA-256 over the canonical owned and update records, which the
    erase guard recomputes) and `chunks` (the same owned records hashed per
    chunk of keys, so a batched erase can check one chunk at a time) are set.
    """

    def __init__(self, plan, *, batch_size=None, storage=None):
        self.plan = plan
        self.batch = batch_size or conf.get("BATCH_SIZE")
        self.storage = storage
        self.counts = defaultdict(lambda: defaultdict(int))
        self.digest = None
        self._hashes = defaultdict(hashlib.sha256)  # {label_lower: sha256 of its owned+update records}
        self.owned_chunks = defaultdict(list)  # {label: [[first key, last key, records, sha256 hex], ...]}

    @property
    def chunks(self):
        """Return {"size": keys per chunk, "owned": {label: [[first, last, records, sha256], ...]}} (JSON)."""
        return {"size": self.batch, "owned": dict(self.owned_chunks)}

    def models(self):
        labels = set(self.plan.owned) | set(self.plan.references) | set(self.plan.updates)
        return relations.insert_order([relations.get_model(lb) for lb in labels])

    def codec(self, model):
        """Return the ModelCodec of `model` under the plan's scope (excluded fields)."""
        return ModelCodec.of(model, exclude=self.plan.scope.excluded_fields(relations.label(model)))

    def records(self):
        plan = self.plan
        ordered = self.models()
        for model in ordered:
            lb = relations.label(model)
            codec = self.codec(model)
            qs = model._base_manager.using(plan.using)
            if lb in plan.references:
                yield from self._emit(codec, qs, plan.references[lb], "reference")
            if lb in plan.owned:
                yield from self._owned(codec, qs, lb, plan.owned[lb])
                if plan.scope.include_files:
                    yield from self._files(codec, qs, plan.owned[lb])
        yield from self._updates(ordered)
        self.digest = self.final_digest()

    def _updates(self, ordered):
        for model in ordered:
            lb = relations.label(model)
            for fname, pks in sorted(self.plan.updates.get(lb, {}).items()):
                field = model._meta.get_field(fname)
                yield from self._emit(
                    ModelCodec.of(model), model._base_manager.using(self.plan.using), pks, "update",
                    attnames=(field.attname,), names=(field.name,), encoders=(encoder(field),),
                )

    def final_digest(self):
        """Combine the per-model hashes, in label order (independent of insert order)."""
        total = hashlib.sha256()
        for lb in sorted(self._hashes):
            total.update(f"{lb}:{self._hashes[lb].hexdigest()}\n".encode())
        return total.hexdigest()

    def _owned(self, codec, qs, model_label, pks):
        """Emit the owned records of `pks` chunk by chunk (sorted keys), hashing each chunk."""
        for chunk in _chunks(pks, self.batch):
            chunk_hash = hashlib.sha256()
            before = self.counts["owned"][codec.label_lower]
            yield from self._emit(codec, qs, chunk, "owned", chunk_hash=chunk_hash)
            self.owned_chunks[model_label].append([
                codec.pk_encoder(chunk[0]), codec.pk_encoder(chunk[-1]),
                self.counts["owned"][codec.label_lower] - before, chunk_hash.hexdigest(),
            ])

    def _emit(self, codec, qs, pks, role, chunk_hash=None, **fetch_kw):
        natural = relations.is_natural_key_model(codec.model)
        content_type = codec.model._meta.label == "contenttypes.ContentType"
        # Another person's credentials never leave with someone else's data:
        # a reference row carries safe values for denied fields (a restore
        # writes those anyway).
        denied = {k: v for k, v in default_deny().get(codec.label_lower, {}).items()
                  if k != "*"} if role == "reference" else {}
        if denied:
            encoders = dict(zip(codec.names, codec.encoders))
            denied = _encode_row([(k, encoders[k]) for k in denied if k in encoders],
                                 # a callable makes a fresh unusable password: export the fixed
                                 # marker instead, so the same rows give the same records
                                 [UNUSABLE_PASSWORD_PREFIX if callable(v) else v
                                  for k, v in denied.items() if k in encoders])
        for pk, fields, json_null in codec.rows(qs, pks, self.batch, **fetch_kw):
            if denied:
                fields.update(denied)
            record = {"model": codec.label_lower, "pk": pk, "fields": fields, "role": role}
            if json_null:
                record["json_null"] = list(json_null)
            if natural and role == "reference":
                if content_type:  # its natural key is two of its own columns: no query
                    record["natural_key"] = [fields["app_label"], fields["model"]]
                else:
                    record["natural_key"] = _natural_key(codec.model, pk, self.plan.using)
            if role in ("owned", "update"):
                line = canonical(record).encode() + b"\n"
                self._hashes[codec.label_lower].update(line)
                if chunk_hash is not None:
                    chunk_hash.update(line)
            self.counts[role][codec.label_lower] += 1
            yield record

    def _files(self, codec, qs, pks):
        excluded = dict(codec.constants)
        file_fields = [f for f in codec.model._meta.local_concrete_fields
                       if isinstance(f, models.FileField) and f.name not in excluded]
        for f in file_fields:
            for chunk in _chunks(pks, self.batch):
                rows, keep = _select(qs, chunk)
                for pk, name in rows.exclude(**{f.attname: ""}).values_list(codec.pk_attname, f.attname):
                    if not name or (keep is not None and pk not in keep):
                        continue
                    storage = f.storage if self.storage is None else self.storage
                    try:
                        with storage.open(name, "rb") as fh:
                            data = fh.read()
                    except FileNotFoundError:
                        data = None  # the row names a file that is gone: say so
                    record = {
                        "model": codec.label_lower,
                        "pk": codec.pk_encoder(pk),
                        "role": "file",
                        "fields": {f.name: {"name": name, "data": None if data is None else _b64(data)}},
                    }
                    self.counts["file"][codec.label_lower] += 1
                    yield record


def _natural_key(model, pk, using):
    obj = model._base_manager.using(using).get(pk=pk)
    return list(obj.natural_key())


def owned_digest(plan, *, batch_size=None):
    """Return the digest of `plan`'s owned and update rows as they are now.

    Equal to `Export(plan).digest` when nothing changed in between; the erase
    guard compares the two.
    """
    exp = Export(plan, batch_size=batch_size)
    ordered = exp.models()
    for model in ordered:
        lb = relations.label(model)
        if lb in plan.owned:
            qs = model._base_manager.using(plan.using)
            for _ in exp._emit(exp.codec(model), qs, plan.owned[lb], "owned"):
                pass
    for _ in exp._updates(ordered):
        pass
    return exp.final_digest()


def chunk_digest(plan, model_label, keys, *, lock=False):
    """Return (records, sha256 hex) of the owned rows `keys` as they are now, for one stored chunk.

    `keys` are the chunk's keys still present; equal to the chunk's entry in
    `Export(...).chunks` when none of its rows changed or went. With `lock`
    (inside a transaction) the rows are read FOR UPDATE on PostgreSQL and
    MySQL/MariaDB, so they cannot change before the transaction ends.
    """
    keys = list(keys)
    exp = Export(plan, batch_size=max(len(keys), 1))  # one query, like the export's chunk
    model = relations.get_model(model_label)
    qs = model._base_manager.using(plan.using)
    qs = qs.select_for_update() if lock else qs
    chunk_hash = hashlib.sha256()
    for _ in exp._emit(exp.codec(model), qs, keys, "owned", chunk_hash=chunk_hash):
        pass
    return sum(exp.counts["owned"].values()), chunk_hash.hexdigest()


def schema(labels):
    """Return {label_lower: fingerprint} for the models named in `labels`."""
    return {
        relations.get_model(lb)._meta.label_lower: relations.schema_fingerprint(relations.get_model(lb))
        for lb in sorted(labels)
    }


def model_for_record(record):
    """Return the concrete model a record names, or raise BundleError."""
    try:
        return relations.get_model(record["model"])
    except Exception:
        raise BundleError(f"record names unknown model {record.get('model')!r}") from None


