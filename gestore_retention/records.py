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
from datetime import datetime
from decimal import Decimal
from itertools import chain

from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX, make_password
from django.db import connections, models
from django.db.models import BooleanField, ExpressionWrapper, F, Func, Q
from django.db.models.sql.constants import MULTI
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from . import conf
from .errors import BundleError
from .graph import relations
from .graph.keys import KeySet
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


READ_ROWS = 20_000  # rows one range query reads at most (a dense stretch of keys)


def _selects(qs, pks, batch):
    """Yield (query, keys to keep or None) covering `pks` of `qs`, each ordered by pk.

    A stretch of integer keys that fills at least half of its span is read
    as one range (`pk >= first AND pk <= last`), up to READ_ROWS keys, and
    the rows of other keys in the span are dropped by the caller: far
    cheaper than IN lists of `batch` parameters (to compile, to bind, and
    for the server to plan, query after query). Other keys use IN lists.
    """
    for stretch in _chunks(pks, max(batch, READ_ROWS)):
        if _dense(stretch):
            yield _range(qs, stretch)
            continue
        for i in range(0, len(stretch), batch):
            chunk = stretch[i : i + batch]
            yield _range(qs, chunk) if _dense(chunk) else (qs.filter(pk__in=chunk).order_by("pk"), None)


def _dense(chunk):
    first, last = chunk[0], chunk[-1]
    return type(first) is int and type(last) is int and last - first + 1 <= 2 * len(chunk)  # noqa: E721


def _range(qs, chunk):
    first, last = chunk[0], chunk[-1]
    keep = None if last - first + 1 == len(chunk) else set(chunk)
    return qs.filter(pk__gte=first, pk__lte=last).order_by("pk"), keep


def _canonical_encoder():
    """Return a function giving the canonical JSON text of a value: sorted keys, no spaces, UTF-8, no NaN.

    Made once: `json.dumps` with options builds a new encoder per call, half
    the cost of encoding a small record. The C encoder, where Python has
    it, encodes exactly as JSONEncoder.encode does.
    """
    from json import encoder as stdlib

    make = getattr(stdlib, "c_make_encoder", None)
    if make is None:  # pragma: no cover (CPython always has it)
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    encode = make(None, None, stdlib.encode_basestring, None, ":", ",", True, False, False)
    return lambda value: "".join(encode(value, 0))


_encode = _canonical_encoder()


def canonical(record):
    """Return the canonical JSON text of a record (what digests are taken over)."""
    if type(record) is Record:
        return record.text
    return _encode(record)


class Record(dict):
    """A record that carries its canonical JSON text, encoded once.

    Export builds `text` beside the dict: the digest is taken over it and
    the bundle writer stores it as the record's line (`bundle.format.seal`
    writes a record's `text` when it has one), so no row is encoded twice.
    The dict must not be changed afterwards.
    """

    __slots__ = ("text",)


def _record(label, label_json, role, pk, fields, json_null=(), natural_key=None):
    """Return the Record of one row, its text equal to canonical() of the same dict, key for key."""
    record = Record(model=label, pk=pk, fields=fields, role=role)
    # canonical() sorts keys: fields, json_null, model, natural_key, pk, role.
    text = '{"fields":' + _encode(fields)
    if json_null:
        record["json_null"] = list(json_null)
        text += ',"json_null":' + _encode(record["json_null"])
    text += ',"model":' + label_json
    if natural_key is not None:
        record["natural_key"] = natural_key
        text += ',"natural_key":' + _encode(natural_key)
    pk_text = str(pk) if type(pk) is int else _encode(pk)
    record.text = text + ',"pk":' + pk_text + ',"role":"' + role + '"}'
    return record


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
        constants = dict(self.constants) if default else {}
        json_cols = []  # [(index, name, nullable)]
        for i, attname in enumerate(attnames):
            f = self.model._meta.get_field(names[i])
            if f.get_internal_type() == "JSONField":
                json_cols.append((i, names[i], f.null, attname))
        flags = {f"_sqlnull_{i}": ExpressionWrapper(Q(**{f"{att}__isnull": True}), output_field=BooleanField())
                 for i, _, nullable, att in json_cols if nullable}
        n = len(attnames)
        using = qs.db
        columns, encoders, formatted = list(attnames), list(encoders), {}
        for i, attname in enumerate(attnames):
            as_text = _iso_in_sql(connections[using], self.model._meta.get_field(names[i]), encoders[i])
            if as_text is not None:
                columns[i] = f"_iso_{i}"
                formatted[columns[i]], encoders[i] = as_text(attname), _iso_text
        for query, keep in _selects(qs, pks, batch):
            if flags or formatted:
                query = query.annotate(**flags, **formatted)
            for row in _read(query.values_list(self.pk_attname, *columns, *flags), using,
                             (self.pk_encoder, *encoders, *[_identity] * len(flags))):
                if keep is not None and row[0] not in keep:
                    continue
                fields = dict(zip(names, row[1 : n + 1]))
                json_null = ()
                if json_cols:
                    sql_null = dict(zip(flags, row[n + 1 :]))
                    json_null = tuple(
                        name for i, name, nullable, _ in json_cols
                        if row[i + 1] is None and not (nullable and sql_null[f"_sqlnull_{i}"])
                    )
                if constants:
                    fields.update(constants)
                yield row[0], fields, json_null


def _read(values_query, using, encoders):
    """Yield the rows of a values_list() query as lists of JSON values, one encoder per column.

    What `values_list()` would return, but each column goes through Django's
    converters and its encoder in one step, and columns that need neither
    (integers, text) are left as the driver returned them: most of the cost
    of reading rows in Python is per value.
    """
    compiler = values_query.query.get_compiler(using=using)
    # A query reads at most a chunk of keys' rows: fetch them in a few calls, not one per 100 rows.
    results = compiler.execute_sql(MULTI, chunk_size=2000)
    expressions = [s[0] for s in compiler.select[: compiler.col_count]]
    converters = compiler.get_converters(expressions)
    if compiler.has_composite_fields(expressions):
        # A composite key reads as several columns: Django converts and joins them first.
        rows = compiler.composite_fields_to_tuples(
            compiler.apply_converters(chain.from_iterable(results), converters), expressions)
        encode = [(p, enc) for p, enc in enumerate(encoders) if enc is not _identity]
        for row in rows:
            row = list(row)
            for position, enc in encode:
                if row[position] is not None:
                    row[position] = enc(row[position])
            yield row
        return
    connection = compiler.connection
    readers = []
    for position, enc in enumerate(encoders):
        convs, expression = converters.get(position, ((), None))
        fast = _raw_reader(connection, expression, convs, enc)
        if fast is not None:
            readers.append((position, fast))
        elif convs or enc is not _identity:
            readers.append((position, _reader(convs, expression, connection, enc)))
    for rows in results:
        for row in rows:
            row = list(row)
            for position, read in readers:
                row[position] = read(row[position])
            yield row


def _reader(convs, expression, connection, enc):
    def read(value):
        for convert in convs:
            value = convert(value, expression, connection)
        return None if value is None else enc(value)

    return read


def _raw_reader(connection, expression, convs, enc):
    """Return a reader from the driver's value straight to JSON, where that is provably the same, or None.

    Django's SQLite driver setup parses a datetime column into a naive
    datetime in UTC, and Django then makes it aware in UTC: its JSON value
    (isoformat) is the naive isoformat with "+00:00".
    """
    if (connection.vendor != "sqlite" or enc is not _iso or len(convs) != 1
            or expression.output_field.get_internal_type() != "DateTimeField"
            or convs[0] != connection.ops.convert_datetimefield_value
            or not settings.USE_TZ or connection.timezone_name != "UTC"):
        return None
    slow = _reader(convs, expression, connection, enc)

    def read(value):
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat() + "+00:00"
        return slow(value)

    return read


def _iso_in_sql(connection, field, enc):
    """Return a function making the SQL expression that reads `field` as ISO text, or None.

    PostgreSQL formats an aware datetime column (in UTC, always six digits of
    microseconds) faster than the driver can parse it into a datetime for us
    to format again; `_iso_text` then gives exactly `isoformat()`.
    """
    if (connection.vendor != "postgresql" or enc is not _iso or not settings.USE_TZ
            or field.get_internal_type() != "DateTimeField" or hasattr(field, "from_db_value")
            or connection.timezone_name != "UTC"):
        return None
    return lambda attname: Func(F(attname), template=_PG_ISO, output_field=models.TextField())


_PG_ISO = """to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')"""


def _iso_text(value):
    # isoformat() leaves out a zero fraction
    return (value[:19] if value.endswith(".000000") else value) + "+00:00"


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
        """Emit the owned records of `pks`, hashing them per chunk of `batch` sorted keys (`chunks`).

        Integer keys are read in one stream (wide range queries) and each row
        is counted in its chunk by key; other keys are read chunk by chunk, as
        the database may order them unlike Python.
        """
        out = self.owned_chunks[model_label]
        one_stream = isinstance(pks, KeySet) and not pks._other
        stream = self._emit(codec, qs, pks, "owned") if one_stream else None
        record = next(stream, None) if one_stream else None
        for chunk in _chunks(pks, self.batch):
            digest, n = hashlib.sha256(), 0
            if one_stream:
                while record is not None and record["pk"] <= chunk[-1]:
                    digest.update(record.text.encode())
                    digest.update(b"\n")
                    n += 1
                    yield record
                    record = next(stream, None)
            else:
                for record in self._emit(codec, qs, chunk, "owned"):
                    digest.update(record.text.encode())
                    digest.update(b"\n")
                    n += 1
                    yield record
            out.append([codec.pk_encoder(chunk[0]), codec.pk_encoder(chunk[-1]), n, digest.hexdigest()])

    def _emit(self, codec, qs, pks, role, **fetch_kw):
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
        label, label_json = codec.label_lower, _encode(codec.label_lower)
        natural_key = None
        hashes = self._hashes[label] if role in ("owned", "update") else None
        counts = self.counts[role]
        for pk, fields, json_null in codec.rows(qs, pks, self.batch, **fetch_kw):
            if denied:
                fields.update(denied)
            if natural and role == "reference":
                if content_type:  # its natural key is two of its own columns: no query
                    natural_key = [fields["app_label"], fields["model"]]
                else:
                    natural_key = _natural_key(codec.model, pk, self.plan.using)
            record = _record(label, label_json, role, pk, fields, json_null, natural_key)
            if hashes is not None:
                hashes.update(record.text.encode())
                hashes.update(b"\n")
            counts[label] += 1
            yield record

    def _files(self, codec, qs, pks):
        excluded = dict(codec.constants)
        file_fields = [f for f in codec.model._meta.local_concrete_fields
                       if isinstance(f, models.FileField) and f.name not in excluded]
        for f in file_fields:
            for rows, keep in _selects(qs, pks, self.batch):
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
    digest, n = hashlib.sha256(), 0
    for record in exp._emit(exp.codec(model), qs, keys, "owned"):
        digest.update(record.text.encode())
        digest.update(b"\n")
        n += 1
    return n, digest.hexdigest()


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


