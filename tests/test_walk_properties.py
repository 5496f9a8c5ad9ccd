"""Property tests: the walk's scope rules against Django's deletion Collector, on random data.

Models are static, so the "random graph" is random *data* over a fixed family
(tests/caseapp/models.py, Realm ... Pact) that has every relation kind: FK
CASCADE / SET_NULL / SET_DEFAULT / SET(...) / PROTECT / RESTRICT / DO_NOTHING
(without a constraint, so it may dangle), nullable self-FKs (CASCADE and
SET_NULL), one-to-one both ways, M2M auto and through, GenericForeignKey with
GenericRelations (and stale ids), multi-table inheritance, an FK with to_field.
Hypothesis draws how many rows of each, which row points at which, which
relations are null, and which rows are the subjects.

For every drawn graph, inside a savepoint that is rolled back:

* blockers: the Collector refuses (ProtectedError / RestrictedError) exactly
  when the plan has blockers, and names only rows the plan's blockers name;
* owned == what the Collector deletes, by concrete model label and pk;
* updates == the rows in the Collector's field updates outside the owned set,
  per field (DESIGN.md: "rows outside the owned set that erasing changes";
  rows that are deleted anyway, e.g. MySQL's nulling of a nullable CASCADE FK
  before the delete, are owned, not updates);
* references == the forward closure of the deleted rows minus those rows,
  computed here object by object through the ORM's own descriptors;
* the export's records carry exactly the plan's rows in each role, and
  erase's own reading of the Collector (erase.collect + check_collector)
  accepts the plan, or refuses when it has blockers;
* for two subjects (two realms), one subject's export holds no owned row of
  the other unless both Collectors delete that row (a genuinely shared
  cascaded row); the other's rows appear in it only as references or
  updates; and walking both at once owns the union of the two owned sets.

Every example runs on the default database, deterministically (derandomize),
so a failure on CI reproduces locally with the same DBS.
"""
from collections import defaultdict

import pytest
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import ProtectedError, RestrictedError
from django.db.models.deletion import Collector
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from gestore_retention.erase import check_collector, collect
from gestore_retention.errors import ErasureBlocked
from gestore_retention.graph import relations
from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from tests.caseapp.models import Guard, Hub, Lock, Memo, Node, Pact, Realm, Seal, Tag

pytestmark = pytest.mark.django_db

USING = DEFAULT_DB_ALIAS
# Deterministic (CI reproduces every example), no example database on disk, and
# each example is its own savepoint, so the function-scoped db fixture is fine.
PROPERTY = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow "explain"
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

MAX_REALMS, MAX_NODES = 3, 6
GONE = "gone"  # a Memo pointing at a node pk that does not exist (no constraint)
STALE = "stale"  # a Tag whose object id names no row
SUBJECT_KINDS = ("realm", "realm", "node", "hub", "seal", "tag", "pact")  # a kind without rows falls back to a realm


# -- drawing a data graph ----------------------------------------------------
@st.composite
def graphs(draw, min_realms=1):
    """Draw a plain description of rows (indices, not pks), built by `build()`."""
    n_realms = draw(st.sampled_from(range(MAX_REALMS, min_realms - 1, -1)))  # most often several: cross-realm rows
    n_nodes = draw(st.integers(0, MAX_NODES) | st.integers(3, MAX_NODES))  # rows outside the owned set point in
    realm = st.integers(0, n_realms - 1)
    maybe_realm = st.none() | realm
    node = st.integers(0, n_nodes - 1) if n_nodes else st.nothing()
    maybe_node = st.none() | node if n_nodes else st.none()
    nodes = [
        draw(st.fixed_dictionaries({
            "realm": realm,
            "parent": maybe_node,  # any node, so CASCADE cycles happen
            "buddy": maybe_node,
            "patron": maybe_realm,
            "sponsor": maybe_realm,
            "home": maybe_realm,  # to_field="code"
            "hub": st.booleans(),
            "mentor": maybe_realm,  # on the Hub's own table
            "watchers": st.sets(realm, max_size=2),
        }))
        for _ in range(n_nodes)
    ]
    pick = st.integers(0, 5)  # taken modulo the rows of that kind when built
    return {
        "realms": n_realms,
        "nodes": nodes,
        "seals": draw(st.lists(st.tuples(node, maybe_realm), max_size=3) if n_nodes else st.just([])),
        "guards": draw(st.lists(st.tuples(realm, maybe_node), max_size=1)),  # PROTECT stops the Collector early
        "locks": draw(st.lists(st.tuples(realm, maybe_node), max_size=2)),
        "memos": draw(st.lists(st.tuples(realm, maybe_node | st.just(GONE)), max_size=2)),
        "tags": draw(st.lists(st.tuples(st.sampled_from(["realm", "node", "hub", "guard", STALE]), pick),
                              max_size=4)),
        "pacts": draw(st.lists(st.tuples(realm, node), max_size=3) if n_nodes else st.just([])),
        "subjects": draw(st.lists(st.tuples(st.sampled_from(SUBJECT_KINDS), pick), min_size=1, max_size=3)),
    }


def build(spec):
    """Create the rows `spec` describes; return ({kind: [instance]}, [subject instance])."""
    rows = defaultdict(list)
    rows["realm"] = [Realm.objects.create(code=f"r{i}") for i in range(spec["realms"])]
    realm = rows["realm"].__getitem__

    def maybe(i):
        return None if i is None else realm(i)

    for n in spec["nodes"]:
        kw = {"realm": realm(n["realm"]), "patron": maybe(n["patron"]), "sponsor": maybe(n["sponsor"]),
              "home": maybe(n["home"])}
        obj = Hub.objects.create(mentor=maybe(n["mentor"]), **kw) if n["hub"] else Node.objects.create(**kw)
        rows["node"].append(obj)
        if n["hub"]:
            rows["hub"].append(obj)
    # Self-references once every node exists (cycles included).
    for obj, n in zip(rows["node"], spec["nodes"]):
        parent = None if n["parent"] is None else rows["node"][n["parent"]].pk
        buddy = None if n["buddy"] is None else rows["node"][n["buddy"]].pk
        if parent is not None or buddy is not None:
            Node.objects.filter(pk=obj.pk).update(parent_id=parent, buddy_id=buddy)
        if n["watchers"]:
            Node.watchers.through.objects.bulk_create(
                Node.watchers.through(node_id=obj.pk, realm_id=realm(i).pk) for i in sorted(n["watchers"]))
    sealed, witnesses = set(), set()
    for i, w in spec["seals"]:  # one-to-one: first come, first served
        if i in sealed:
            continue
        sealed.add(i)
        witness = None if w is None or w in witnesses else realm(w)
        witnesses.add(w)
        rows["seal"].append(Seal.objects.create(node_id=rows["node"][i].pk, witness=witness))
    for r, i in spec["guards"]:
        rows["guard"].append(Guard.objects.create(realm=realm(r), node_id=None if i is None else rows["node"][i].pk))
    for r, i in spec["locks"]:
        rows["lock"].append(Lock.objects.create(realm=realm(r), node_id=None if i is None else rows["node"][i].pk))
    for r, i in spec["memos"]:
        node_id = None if i is None else 10**9 if i == GONE else rows["node"][i].pk
        rows["memo"].append(Memo.objects.create(realm=realm(r), node_id=node_id))
    for kind, i in spec["tags"]:
        if kind == STALE or not rows[kind]:
            ct, object_id = ContentType.objects.get_for_model([Realm, Node, Hub, Guard][i % 4]), 10**9 + i
        else:
            target = rows[kind][i % len(rows[kind])]
            # A tag "at a node" names the Node content type even when the row
            # is a Hub's parent: what a tag made through the parent class stores.
            model = {"realm": Realm, "node": Node, "hub": Hub, "guard": Guard}[kind]
            ct, object_id = ContentType.objects.get_for_model(model), target.pk
        rows["tag"].append(Tag.objects.create(content_type=ct, object_id=object_id))
    for r, i in spec["pacts"]:
        rows["pact"].append(Pact.objects.create(realm=realm(r), node=rows["node"][i], terms=f"{r}/{i}"))
    subjects = []
    for kind, i in spec["subjects"]:
        if not rows[kind]:
            kind = "realm"
        obj = rows[kind][i % len(rows[kind])]
        # A "node" subject is loaded as a Node even when it is a Hub's parent row.
        model = {"node": Node}.get(kind, type(obj))
        subjects.append(model._base_manager.get(pk=obj.pk))
    return rows, subjects


class Rollback(Exception):
    pass


def in_savepoint(check):
    """Run `check()` inside a savepoint that is always rolled back: each example starts clean."""
    try:
        with transaction.atomic(using=USING):
            check()
            raise Rollback
    except Rollback:
        pass


# -- what Django's Collector does --------------------------------------------
def key(obj):
    return relations.label(type(obj)), obj.pk


def collector_view(subjects):
    """Return (deleted {(label, pk)}, changed {(label, field, pk)}, error or None) for deleting `subjects` together.

    collect() takes one model at a time and checks RESTRICT at the end of each
    top-level call. For subjects of several models, each call defers that check
    and it runs once over everything collected, with Django's own helpers, as
    a single collect() of all the subjects would.
    """
    collector = Collector(using=USING, origin=None)
    by_model = defaultdict(list)
    for obj in subjects:
        by_model[type(obj)].append(obj)
    error = None
    try:
        if len(by_model) == 1:
            collector.collect(next(iter(by_model.values())))
        else:
            for _model, objs in sorted(by_model.items(), key=lambda kv: kv[0]._meta.label):
                collector.collect(objs, fail_on_restricted=False)
            for model, instances in collector.data.items():
                collector.clear_restricted_objects_from_set(model, instances)
            for qs in collector.fast_deletes:
                collector.clear_restricted_objects_from_queryset(qs.model, qs)
            left = {o for per_field in collector.restricted_objects.values() for objs in per_field.values() for o in objs}
            if left:
                raise RestrictedError("restricted", left)
    except (ProtectedError, RestrictedError) as exc:
        error = exc
    deleted = set()
    for model, instances in collector.data.items():
        deleted |= {key(o) for o in instances}
    for qs in collector.fast_deletes:
        deleted |= {(relations.label(qs.model), pk) for pk in qs.values_list("pk", flat=True)}
    changed = set()
    for (f, _value), batches in collector.field_updates.items():
        for objs in batches:
            pks = objs.values_list("pk", flat=True) if hasattr(objs, "values_list") else [o.pk for o in objs]
            changed |= {(relations.label(f.model), f.name, pk) for pk in pks}
    return deleted, changed, error


# -- the references oracle: object by object through the ORM -------------------
def forward_neighbours(obj):
    """Yield the rows `obj` depends on: what its own table's FKs / O2Os and its GFKs point at.

    Not its M2M fields: an M2M link is a row of its own (the through model's),
    owned when either end is deleted, and the far end is a reference of that
    link row. A reference row's links are no part of it, so a restore does
    not need their far ends.
    """
    opts = type(obj)._meta
    for f in opts.local_concrete_fields:
        if f.is_relation:
            try:
                target = getattr(obj, f.name)
            except ObjectDoesNotExist:  # a DO_NOTHING FK without a constraint, dangling
                continue
            if target is not None:
                yield target
    for f in opts.private_fields:
        if isinstance(f, GenericForeignKey):
            target = getattr(obj, f.name)  # None for a stale object id
            if target is not None:
                yield target


def forward_closure(start):
    """Return {(label, pk)} reachable forward from the rows `start`, minus `start` itself."""
    seen, queue, found = set(start), list(start), set()
    while queue:
        model_label, pk = queue.pop()
        obj = relations.get_model(model_label)._base_manager.using(USING).get(pk=pk)
        for target in forward_neighbours(obj):
            k = key(target)
            if k not in seen:
                seen.add(k)
                found.add(k)
                queue.append(k)
    return found


# -- reading a plan ------------------------------------------------------------
def keys_of(per_label):
    return {(lb, pk) for lb, pks in per_label.items() for pk in pks}


def update_keys(plan):
    return {(lb, f, pk) for lb, per_field in plan.updates.items() for f, pks in per_field.items() for pk in pks}


def blocker_rows(plan, kind):
    return {(b.model, pk) for b in plan.blockers if b.kind == kind for pk in b.pks}


def record_keys(records, role):
    out = set()
    for r in records:
        if r["role"] == role:
            lb = relations.get_model(r["model"])._meta.label
            if role == "update":
                out |= {(lb, f, r["pk"]) for f in r["fields"]}
            else:
                out.add((lb, r["pk"]))
    return out


def check_blockers(plan, error):
    """The Collector refuses exactly when the plan has blockers, naming only the plan's blocking rows."""
    assert {b.kind for b in plan.blockers} <= {"protect", "restrict"}  # no scope, no boundary
    if error is None:
        assert plan.blockers == ()
        return
    assert plan.blockers, f"the Collector refuses ({error}) but the plan has no blockers"
    named = {key(o) for o in (error.protected_objects if isinstance(error, ProtectedError) else error.restricted_objects)}
    if isinstance(error, ProtectedError):
        # PROTECT raises where the Collector first meets it and stops there:
        # the plan knows every protected row, Django names some of them.
        assert named and named <= blocker_rows(plan, "protect")
    else:
        # RESTRICT is checked after everything is collected: the same rows.
        assert not blocker_rows(plan, "protect")
        assert named == blocker_rows(plan, "restrict")
    # Each protect/restrict blocker names exactly the rows whose FK points into the owned set.
    for b in plan.blockers:
        model = relations.get_model(b.model)
        fk = model._meta.get_field(b.field)
        owned = plan.owned.get(relations.label(fk.related_model), ())
        pointing = set(model._base_manager.filter(**{f"{fk.name}__in": list(owned)}).values_list("pk", flat=True))
        if b.kind == "restrict":
            pointing -= set(plan.owned.get(b.model, ()))
        assert set(b.pks) == pointing, b


def check_plan_against_collector(subjects):
    """Check walk(subjects) against the Collector; return (plan, its records, what the Collector deletes, its error)."""
    plan = walk(subjects, using=USING)
    deleted, changed, error = collector_view(subjects)
    # Coverage, shown by pytest --hypothesis-show-statistics.
    event(f"collector: {type(error).__name__ if error else 'deletes'}")
    event(f"subjects: {'+'.join(sorted({type(o).__name__ for o in subjects}))}")
    event(f"updates: {bool(plan.updates)}")
    check_blockers(plan, error)
    owned = keys_of(plan.owned)
    records = list(Export(plan).records())
    # The export carries exactly the plan's rows, each in its one role.
    assert record_keys(records, "owned") == owned
    assert record_keys(records, "reference") == keys_of(plan.references)
    assert record_keys(records, "update") == update_keys(plan)
    assert not owned & keys_of(plan.references)
    assert not owned & {(lb, pk) for lb, _f, pk in update_keys(plan)}
    # The erase guard's own reading of the Collector (erase.collect feeds it
    # the subjects one model at a time) agrees with the plan.
    if plan.blockers:
        with pytest.raises(ErasureBlocked):
            collect(plan)
    else:
        check_collector(plan, collect(plan))
    if isinstance(error, ProtectedError):
        return plan, records, deleted, error  # the Collector stopped part-way: its sets are partial
    assert owned == deleted
    assert update_keys(plan) == {(lb, f, pk) for lb, f, pk in changed if (lb, pk) not in deleted}
    assert keys_of(plan.references) == forward_closure(deleted)
    for r in records:  # an update record holds the column's value as it is now
        if r["role"] == "update":
            model = relations.get_model(r["model"])
            for name, value in r["fields"].items():
                attname = model._meta.get_field(name).attname
                assert model._base_manager.filter(pk=r["pk"]).values_list(attname, flat=True).get() == value
    return plan, records, deleted, error


# -- the properties -------------------------------------------------------------
@settings(PROPERTY, max_examples=150)
@given(spec=graphs())
def test_walk_matches_the_collector_on_random_graphs(spec):
    in_savepoint(lambda: check_plan_against_collector(build(spec)[1]))


@settings(PROPERTY, max_examples=60)
@given(spec=graphs(min_realms=2), pair=st.tuples(st.integers(0, MAX_REALMS - 1), st.integers(0, MAX_REALMS - 2)))
def test_an_export_holds_no_owned_row_of_another_subject(spec, pair):
    def check():
        rows, _ = build(spec)
        realms = rows["realm"]
        a = realms[pair[0] % len(realms)]
        b = realms[(pair[0] + 1 + pair[1] % (len(realms) - 1)) % len(realms)]  # never a
        plan_a, records, deleted_a, error_a = check_plan_against_collector([a])
        plan_b, _, deleted_b, error_b = check_plan_against_collector([b])
        owned_a, owned_b = keys_of(plan_a.owned), keys_of(plan_b.owned)
        if not isinstance(error_a, ProtectedError) and not isinstance(error_b, ProtectedError):
            # The two owned sets meet only in rows that deleting either subject
            # deletes (a node of a whose parent or home is b's, a pact, ...).
            assert owned_a & owned_b == deleted_a & deleted_b
        assert record_keys(records, "owned") == owned_a  # a's export
        for r in records:
            k = (relations.get_model(r["model"])._meta.label, r["pk"])
            if k in owned_b - owned_a:  # b's own row: shared data of a at most, never a's
                assert r["role"] in ("reference", "update"), r
        # Walking both at once owns the union, and changes what either changes outside it.
        both = walk([a, b], using=USING)
        union = owned_a | owned_b
        assert keys_of(both.owned) == union
        assert update_keys(both) == {u for u in update_keys(plan_a) | update_keys(plan_b) if (u[0], u[2]) not in union}

    in_savepoint(check)
