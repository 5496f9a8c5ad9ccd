"""Retention policies: the TOML loader, validation, and the subject selection.

A policy is data a compliance officer can review: a TOML file read with the
standard library's `tomllib`, or the same dictionary handed to
`Policy.from_dict()`. Every problem is a `PolicyError` whose message names the
file and the key, e.g.::

    policies/x.toml: key "select.churnedd_at__lt": unknown field "churnedd_at" on demoapp.Organisation

This module is the workflow layer: it knows models and the ORM, never bundles,
commands or Celery.
"""
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from types import MappingProxyType

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError
from django.db import models

from gestore_retention import conf
from gestore_retention.errors import PolicyError
from gestore_retention.holds import exclude_held

ACTIONS = ("archive-and-erase", "archive", "report")
TOP_KEYS = ("name", "description", "subject", "schedule", "select", "exclude", "action", "scope", "bundle")
REQUIRED_KEYS = ("name", "subject", "select", "action", "schedule")
SCOPE_KEYS = ("boundaries", "exclude_models")
BUNDLE_KEYS = ("storage", "keep_for")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
# Signed offsets from the run's clock: "-90d" is ninety days before `now`.
# No "m": minutes or months would be a guess, and a wrong guess erases data.
RELATIVE_RE = re.compile(r"^([+-])(\d+)([shdw])$")
DURATION_RE = re.compile(r"^(\d+)([shdw])$")
UNITS = {"s": "seconds", "h": "hours", "d": "days", "w": "weeks"}
UTC = dt.timezone.utc


# -- cron ------------------------------------------------------------------

MONTH_NAMES = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
DAY_NAMES = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (field name as django-celery-beat spells it, low, high, names)
CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day_of_month", 1, 31, {}),
    ("month_of_year", 1, 12, MONTH_NAMES),
    ("day_of_week", 0, 7, DAY_NAMES),  # 0 and 7 are both Sunday
)


def parse_cron(expr):
    """Validate a 5-field cron expression; return its fields, normalised.

    Accept `*`, `*/n`, `a`, `a-b`, `a-b/n` and comma lists, with month and
    weekday names (JAN, MON). Return a dict keyed like django-celery-beat's
    CrontabSchedule (minute, hour, day_of_month, month_of_year, day_of_week)
    with names turned into numbers and weekday 7 into 0. Raise ValueError.
    """
    if not isinstance(expr, str):
        raise ValueError(f"expected a cron string, got {type(expr).__name__}")
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields (minute hour day month weekday), has {len(parts)}")
    out = {}
    for text, (fname, low, high, names) in zip(parts, CRON_FIELDS):
        items = [_cron_item(item, fname, low, high, names) for item in text.split(",")]
        if fname == "day_of_week":
            items = _weekday_seven_to_zero(items)
        out[fname] = ",".join(items)
    return out


def _cron_number(token, fname, low, high, names):
    value = names.get(token.upper()) if names else None
    if value is None:
        if not token.isdigit():
            raise ValueError(f"cron field {fname}: {token!r} is not a number" + (
                " or a name" if names else ""))
        value = int(token)
    if not low <= value <= high:
        raise ValueError(f"cron field {fname}: {value} is out of range {low}-{high}")
    return value


def _cron_item(item, fname, low, high, names):
    base, slash, step = item.partition("/")
    if slash:
        if not step.isdigit() or int(step) == 0:
            raise ValueError(f"cron field {fname}: bad step {item!r}")
    if base == "*":
        return f"*/{int(step)}" if slash else "*"
    first, dash, last = base.partition("-")
    a = _cron_number(first, fname, low, high, names)
    if not dash:
        if slash:
            raise ValueError(f"cron field {fname}: a step needs * or a range, got {item!r}")
        return str(a)
    b = _cron_number(last, fname, low, high, names)
    if b < a:
        raise ValueError(f"cron field {fname}: range {item!r} runs backwards")
    return f"{a}-{b}" + (f"/{int(step)}" if slash else "")


def _weekday_seven_to_zero(items):
    # Celery counts weekdays 0-6; cron also accepts 7 for Sunday. Expand any
    # item that touches 7 into plain numbers so nothing reaches Celery as 7.
    out = []
    for item in items:
        if "7" not in re.split(r"[-/]", item):
            out.append(item)
            continue
        rng, _, step = item.partition("/")
        a, _, b = rng.partition("-")
        days = range(int(a), int(b or a) + 1, int(step or 1))
        out.extend(str(d % 7) for d in days)
    return list(dict.fromkeys(out))


# -- values ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Relative:
    """A time relative to the run's clock: `now + delta` (delta is negative for the past)."""

    delta: dt.timedelta

    def resolve(self, now, *, date_only):
        moment = now.astimezone(UTC) + self.delta
        return moment.date() if date_only else moment


def parse_duration(value):
    """Parse "400d", "12w", "36h", "90s" into a timedelta; raise ValueError."""
    if isinstance(value, dt.timedelta):
        if value <= dt.timedelta(0):
            raise ValueError("must be a positive duration")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string like \"400d\", got {type(value).__name__}")
    m = DURATION_RE.match(value)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"invalid duration {value!r}: use a positive number and a unit s, h, d or w, e.g. \"400d\"")
    return dt.timedelta(**{UNITS[m.group(2)]: int(m.group(1))})


def _parse_moment(value, *, date_only):
    """Turn a policy value for a date/datetime field into a constant or a Relative."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError(f"expected a relative time like \"-90d\" or an ISO date, got {value!r}")
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.date() if date_only else moment
    if isinstance(value, dt.date):
        return value if date_only else dt.datetime.combine(value, dt.time(), tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected a relative time like \"-90d\" or an ISO date, got {type(value).__name__}")
    m = RELATIVE_RE.match(value)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return Relative(sign * dt.timedelta(**{UNITS[m.group(3)]: int(m.group(2))}))
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return _parse_moment(dt.date.fromisoformat(value), date_only=date_only)
        return _parse_moment(dt.datetime.fromisoformat(value), date_only=date_only)
    except ValueError:
        raise ValueError(
            f"invalid relative-time value {value!r}: use \"-90d\", \"-12h\", \"-2w\" "
            f"(units s, h, d, w) or an ISO date/datetime such as \"2024-01-31\""
        ) from None


def _resolve(value, now, date_only):
    if isinstance(value, Relative):
        return value.resolve(now, date_only=date_only)
    if isinstance(value, (list, tuple)):
        return [_resolve(v, now, date_only) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class _Condition:
    """One validated `lookup = value` pair, ready to be resolved at run time."""

    key: str
    value: object          # a constant, a Relative, or a list of those
    temporal: bool         # a date/datetime value: Relative values resolve against `now`
    date_only: bool        # the field is a DateField: resolve to a date
    many: bool             # the path crosses a to-many relation (rows may repeat)

    def kwargs(self, now):
        return {self.key: _resolve(self.value, now, self.date_only)}


# -- lookups ---------------------------------------------------------------

def _field_label(field):
    return f'"{field.name}" ({type(field).__name__})'


def _walk_lookup(model, key):
    """Walk `key` across relations; return (final field, tail names, crosses to-many).

    Raise ValueError naming the unknown field or lookup and the model.
    """
    parts = key.split("__")
    opts = model._meta
    field, many, i = None, False, 0
    while i < len(parts):
        name = opts.pk.name if parts[i] == "pk" else parts[i]
        try:
            candidate = opts.get_field(name)
        except FieldDoesNotExist:
            if field is None:
                raise ValueError(f'unknown field "{parts[i]}" on {opts.label}') from None
            break
        field = candidate
        i += 1
        if getattr(field, "many_to_many", False) or getattr(field, "one_to_many", False):
            many = True
        if not field.is_relation:
            break
        if field.related_model is None:
            raise ValueError(f'field "{field.name}" on {opts.label} is a generic foreign key and cannot be filtered on')
        if i < len(parts):
            nxt = field.related_model._meta
            nxt_name = nxt.pk.name if parts[i] == "pk" else parts[i]
            try:
                nxt.get_field(nxt_name)
            except FieldDoesNotExist:
                if field.get_lookup(parts[i]) or field.get_transform(parts[i]):
                    break
                raise ValueError(f'unknown field "{parts[i]}" on {nxt.label}') from None
            opts = nxt
    tail = parts[i:]
    if tail and not (field.get_lookup(tail[0]) or field.get_transform(tail[0])):
        owner = field.model._meta.label if getattr(field, "model", None) else opts.label
        raise ValueError(f'unknown lookup "{tail[0]}" for field {_field_label(field)} on {owner}')
    return field, tail, many


def _condition(model, key, value):
    """Validate one select/exclude pair against `model`; return a _Condition or raise ValueError."""
    if not isinstance(key, str) or not key or key.startswith("_") or "___" in key:
        raise ValueError("not a lookup")
    field, tail, many = _walk_lookup(model, key)
    lookup = tail[-1] if tail else "exact"
    is_transform = len(tail) > 1 or (tail and not field.get_lookup(tail[0]))
    if isinstance(value, dict):
        raise ValueError("a value cannot be a table")
    if lookup == "isnull" and not isinstance(value, bool):
        raise ValueError(f"isnull takes true or false, got {value!r}")
    if lookup in ("in", "range"):
        if not isinstance(value, list) or (lookup == "range" and len(value) != 2):
            raise ValueError(f"{lookup} takes a list" + (" of two values" if lookup == "range" else ""))
    on_date = (  # churned_at__date__lt: a DateTimeField seen as a date
        len(tail) in (1, 2) and tail[0] == "date" and isinstance(field, models.DateTimeField)
        and (len(tail) == 2 or not field.get_lookup("date"))
    )
    temporal = lookup != "isnull" and not field.is_relation and (on_date or (
        not is_transform and isinstance(field, (models.DateField, models.DateTimeField))))
    date_only = temporal and (on_date or not isinstance(field, models.DateTimeField))
    if temporal:
        if isinstance(value, list):
            value = tuple(_parse_moment(v, date_only=date_only) for v in value)
        else:
            value = _parse_moment(value, date_only=date_only)
    elif isinstance(value, list):
        value = tuple(value)
    cond = _Condition(key, value, temporal, date_only, many)
    # Let Django build the filter once: it checks what the walk above cannot
    # (chained transforms, JSON keys) and preps the value for the field type.
    try:
        str(model._base_manager.filter(**cond.kwargs(dt.datetime.now(UTC))).query)
    except (FieldError, ValidationError, ValueError, TypeError) as exc:
        msg = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        raise ValueError(msg) from None
    return cond


# -- the policy ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScopeSpec:
    """What a policy forbids the walk to cross: model labels only."""

    boundaries: tuple = ()       # (label, ...) the walk records as keys and never enters
    exclude_models: tuple = ()   # (label, ...) never exported nor erased by this policy


@dataclasses.dataclass(frozen=True)
class Policy:
    """A validated retention policy. Build it with `load_policy()` or `Policy.from_dict()`."""

    name: str
    description: str
    subject: str                 # model label, e.g. "demoapp.Organisation"
    schedule: str                # 5-field cron, UTC
    select: MappingProxyType = dataclasses.field(hash=False)   # {lookup: value} as written
    exclude: MappingProxyType = dataclasses.field(hash=False)  # {lookup: value} as written
    action: str
    scope: ScopeSpec
    storage: str                 # a STORAGES alias
    keep_for: dt.timedelta | None
    source: str                  # file path, or "<python>"
    text_hash: str               # sha256 hex of the file bytes (or canonical JSON)
    _select: tuple = dataclasses.field(default=(), repr=False, compare=False, hash=False)
    _exclude: tuple = dataclasses.field(default=(), repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data, *, source="<python>", text_hash=None):
        """Validate a policy definition (the TOML document's shape) and return a Policy.

        `text_hash` defaults to the SHA-256 of the definition's canonical JSON.
        """
        return _build(data, source=source, text_hash=text_hash)

    @property
    def model(self):
        """The subject model class."""
        return apps.get_model(self.subject)

    @property
    def cron(self):
        """The schedule's fields, keyed like django-celery-beat's CrontabSchedule."""
        return parse_cron(self.schedule)

    def to_dict(self):
        """Return the definition as plain data (the shape `from_dict` takes)."""
        out = {
            "name": self.name,
            "description": self.description,
            "subject": self.subject,
            "schedule": self.schedule,
            "select": dict(self.select),
            "exclude": dict(self.exclude),
            "action": self.action,
            "scope": {"boundaries": list(self.scope.boundaries),
                      "exclude_models": list(self.scope.exclude_models)},
            "bundle": {"storage": self.storage},
        }
        if self.keep_for is not None:
            out["bundle"]["keep_for"] = _format_duration(self.keep_for)
        return out

    def queryset(self, *, now, using="default"):
        """Return the subjects this policy selects at `now`, ordered by pk.

        Relative times ("-90d") resolve against `now` (an aware datetime).
        `exclude` conditions and subjects under an active legal hold are left
        out. This is a read-only operation.
        """
        if now is None or now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        model = self.model
        qs = model._base_manager.db_manager(using).all()
        for cond in self._select:
            qs = qs.filter(**cond.kwargs(now))
        # Each exclude condition drops subjects on its own: matching any one
        # of them is enough to be left alone (the safe reading).
        for cond in self._exclude:
            qs = qs.exclude(**cond.kwargs(now))
        if any(c.many for c in self._select + self._exclude):
            # A to-many path repeats rows; dedupe by pk without DISTINCT over
            # every column (JSON columns are not comparable everywhere).
            qs = model._base_manager.db_manager(using).filter(pk__in=qs.values("pk"))
        qs = exclude_held(qs, using=using)
        return qs.order_by("pk")

    def select_batches(self, *, now, using="default", batch_size=None):
        """Yield lists of subject pks, at most `batch_size` each, in pk order.

        Paginate by key (pk > last), so each batch is one bounded query and
        rows arriving meanwhile neither repeat nor shift the pages.
        """
        batch_size = batch_size or conf.get("BATCH_SIZE")
        qs = self.queryset(now=now, using=using)
        last = None
        while True:
            page = qs if last is None else qs.filter(pk__gt=last)
            pks = list(page.values_list("pk", flat=True)[:batch_size])
            if not pks:
                return
            yield pks
            if len(pks) < batch_size:
                return
            last = pks[-1]


def _format_duration(delta):
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- building and loading --------------------------------------------------

def _display(path):
    path = os.fspath(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _canonical_json(data):
    def default(value):
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return _format_duration(value)
        if isinstance(value, (tuple, MappingProxyType)):
            return list(value) if isinstance(value, tuple) else dict(value)
        raise TypeError(f"cannot hash a {type(value).__name__}")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=default)


def _label(value, src, key):
    if not isinstance(value, str):
        raise PolicyError(f'{src}: key "{key}": expected a model label string, got {type(value).__name__}')
    try:
        return apps.get_model(value)._meta.label
    except (LookupError, ValueError):
        raise PolicyError(f'{src}: key "{key}": unknown model "{value}" (expected "app_label.Model")') from None


def _table(data, src, key, allowed):
    if not isinstance(data, dict):
        raise PolicyError(f'{src}: key "{key}": expected a table, got {type(data).__name__}')
    for k in data:
        if k not in allowed:
            raise PolicyError(f'{src}: key "{key}.{k}": unknown key (allowed: {", ".join(allowed)})')
    return data


def _string(data, src, key, default=None):
    value = data.get(key, default)
    if not isinstance(value, str):
        raise PolicyError(f'{src}: key "{key}": expected a string, got {type(value).__name__}')
    return value


def _conditions(model, data, src, key):
    if not isinstance(data, dict):
        raise PolicyError(f'{src}: key "{key}": expected a table of lookups, got {type(data).__name__}')
    out = []
    for lookup, value in data.items():
        try:
            out.append(_condition(model, lookup, value))
        except ValueError as exc:
            raise PolicyError(f'{src}: key "{key}.{lookup}": {exc}') from None
    return tuple(out)


def _build(data, *, source, text_hash):
    src = _display(source) if source != "<python>" else source
    if not isinstance(data, dict):
        raise PolicyError(f"{src}: a policy must be a table, got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise PolicyError(f'{src}: key "{key}": unknown key (allowed: {", ".join(TOP_KEYS)})')
    for key in REQUIRED_KEYS:
        if key not in data:
            raise PolicyError(f'{src}: key "{key}": missing (required: {", ".join(REQUIRED_KEYS)})')

    name = _string(data, src, "name")
    if not NAME_RE.match(name):
        raise PolicyError(f'{src}: key "name": {name!r} must be 1-100 lowercase letters, digits, "-", "_" or "."')
    description = _string(data, src, "description", "")
    subject = _label(data["subject"], src, "subject")
    model = apps.get_model(subject)
    schedule = _string(data, src, "schedule")
    try:
        parse_cron(schedule)
    except ValueError as exc:
        raise PolicyError(f'{src}: key "schedule": {exc}') from None
    action = _string(data, src, "action")
    if action not in ACTIONS:
        raise PolicyError(f'{src}: key "action": unknown action {action!r} (one of: {", ".join(ACTIONS)})')

    select = _conditions(model, data["select"], src, "select")
    if not select:
        raise PolicyError(f'{src}: key "select": must hold at least one condition (an empty select picks every row)')
    exclude = _conditions(model, data.get("exclude", {}), src, "exclude")

    scope_data = _table(data.get("scope", {}), src, "scope", SCOPE_KEYS)
    scope_parts = {}
    for key in SCOPE_KEYS:
        labels = scope_data.get(key, [])
        if not isinstance(labels, (list, tuple)):
            raise PolicyError(f'{src}: key "scope.{key}": expected a list of model labels, got {type(labels).__name__}')
        scope_parts[key] = tuple(_label(v, src, f"scope.{key}") for v in labels)
    scope = ScopeSpec(**scope_parts)

    bundle = _table(data.get("bundle", {}), src, "bundle", BUNDLE_KEYS)
    storage = bundle.get("storage", conf.get("STORAGE"))
    if not isinstance(storage, str):
        raise PolicyError(f'{src}: key "bundle.storage": expected a string, got {type(storage).__name__}')
    from django.core.files.storage import storages

    if storage not in storages.backends:
        raise PolicyError(f'{src}: key "bundle.storage": unknown storage alias "{storage}" '
                          f'(STORAGES has: {", ".join(sorted(storages.backends))})')
    keep_for = None
    if "keep_for" in bundle:
        try:
            keep_for = parse_duration(bundle["keep_for"])
        except ValueError as exc:
            raise PolicyError(f'{src}: key "bundle.keep_for": {exc}') from None

    if text_hash is None:
        text_hash = hashlib.sha256(_canonical_json(data).encode()).hexdigest()
    return Policy(
        name=name, description=description, subject=subject, schedule=schedule,
        select=MappingProxyType(dict(data["select"])), exclude=MappingProxyType(dict(data.get("exclude", {}))),
        action=action, scope=scope, storage=storage, keep_for=keep_for,
        source=os.fspath(source), text_hash=text_hash, _select=select, _exclude=exclude,
    )


def load_policy(path):
    """Read and validate one TOML policy file; raise PolicyError naming the file and key."""
    src = _display(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{src}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{src}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{src}: invalid TOML: {exc}") from None
    return _build(data, source=path, text_hash=hashlib.sha256(raw).hexdigest())


def load_policies(dirs=None):
    """Load every `*.toml` in `dirs` (default: the POLICY_DIRS setting); return {name: Policy}.

    Two files defining the same name are an error naming both.
    """
    dirs = conf.get("POLICY_DIRS") if dirs is None else dirs
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    policies = {}
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise PolicyError(f"{_display(directory)}: policy directory does not exist")
        for path in sorted(directory.glob("*.toml")):
            policy = load_policy(path)
            if policy.name in policies:
                raise PolicyError(
                    f'{_display(path)}: key "name": policy "{policy.name}" is already defined in '
                    f"{_display(policies[policy.name].source)}"
                )
            policies[policy.name] = policy
    return policies


def get_policy(name_or_path, *, dirs=None):
    """Return a policy by name (among `load_policies(dirs)`) or by path to a .toml file."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return load_policy(text)
    policies = load_policies(dirs)
    try:
        return policies[text]
    except KeyError:
        known = ", ".join(sorted(policies)) or "none"
        raise PolicyError(f'unknown policy "{text}" (known: {known})') from None
