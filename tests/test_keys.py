"""KeySet behaves as a frozenset of keys and stays small for runs of integers."""
import pickle
import uuid

from hypothesis import example, given
from hypothesis import strategies as st

from gestore_retention.graph import keys as keys_module
from gestore_retention.graph.keys import KeySet, KeySetBuilder

ints = st.integers(min_value=-50, max_value=300)
key_lists = st.lists(st.one_of(ints, ints, st.text(max_size=2), st.tuples(st.integers(0, 3), st.integers(0, 3))),
                     max_size=120)


@given(key_lists, key_lists)
def test_algebra_matches_frozenset(a, b):
    ka, kb, fa, fb = KeySet(a), KeySet(b), frozenset(a), frozenset(b)
    assert ka == fa and fa == ka and len(ka) == len(fa)
    assert ka | kb == fa | fb
    assert ka - kb == fa - fb
    assert ka & kb == fa & fb
    assert (ka | set(b)) == fa | fb and (set(a) - kb) == fa - fb
    assert ka.union(b, [7]) == fa.union(fb, [7])
    assert ka.issubset(ka | kb)
    for k in list(fa)[:20] + [301, -51, "zz", (9, 9), None, [1]]:
        assert (k in ka) == (k in fa if not isinstance(k, list) else False)
    assert isinstance(ka | kb, KeySet) and isinstance(ka - set(b), KeySet)


@given(st.lists(ints, max_size=300), st.integers(1, 7))
def test_iterates_sorted_and_chunks(a, size):
    ks = KeySet(a)
    assert list(ks) == sorted(set(a))
    chunks = list(ks.chunks(size))
    assert [k for c in chunks for k in c] == sorted(set(a))
    assert all(0 < len(c) <= size for c in chunks)


def test_contiguous_keys_take_one_run(monkeypatch):
    monkeypatch.setattr(keys_module, "FLUSH_AT", 1000)  # many flushes, segments merged
    builder = KeySetBuilder()
    for k in reversed(range(1, 200_001)):
        builder.add(k)
    ks = builder.build()
    assert len(ks) == 200_000 and 1 in ks and 200_000 in ks and 0 not in ks and 200_001 not in ks
    assert len(ks._starts) == 1
    assert len(ks - KeySet(range(100, 200))) == 200_000 - 100


def test_other_keys_and_pickle():
    u = uuid.uuid4()
    ks = KeySet([3, 1, 2, u, "x", (1, 2)])
    assert u in ks and (1, 2) in ks and "x" in ks and 2 in ks and True not in KeySet([2])
    assert pickle.loads(pickle.dumps(ks)) == ks
    assert frozenset(ks) == {1, 2, 3, u, "x", (1, 2)}
    assert repr(KeySet([1, 2])) == "KeySet({1, 2})" and "runs" in repr(KeySet(range(0, 40, 2)))
    assert hash(KeySet([1, 2])) == hash(KeySet([2, 1]))
    assert not KeySet() and KeySet() == frozenset()


@given(st.lists(st.integers(0, 60), max_size=80, unique=True))
def test_key_filter_matches_exactly_the_keys(keys):
    from django.db.models import Q

    from gestore_retention.graph.keys import key_filter

    keys = sorted(keys)
    for q in (key_filter("n", keys), key_filter("n", KeySet(keys))):
        assert isinstance(q, Q)
        assert {n for n in range(-2, 64) if _matches(q, n)} == set(keys)


def _matches(node, n):
    """Whether value `n` of the column satisfies the Q `node` of in/gte/lte lookups."""
    from django.db.models import Q

    if isinstance(node, Q):
        results = [_matches(child, n) for child in node.children]
        return any(results) if node.connector == "OR" else all(results)
    lookup, value = node
    if lookup.endswith("__in"):
        return n in value
    return n >= value if lookup.endswith("__gte") else n <= value


def test_key_filter_turns_runs_into_ranges():
    from django.db.models import Q

    from gestore_retention.graph.keys import key_filter

    q = key_filter("pk", list(range(1, 1001)) + [2000, 2002])
    assert q.connector == "OR" and ("pk__in", [2000, 2002]) in q.children
    (run,) = [c for c in q.children if isinstance(c, Q)]
    assert sorted(run.children) == [("pk__gte", 1), ("pk__lte", 1000)]
    assert key_filter("pk", ["a", "b", "c", "d"]).children == [("pk__in", ["a", "b", "c", "d"])]


@given(key_lists, st.integers(1, 7))
@example([0, 1], 1)  # a short run longer than the budget is split
def test_query_chunks_cover_the_keys_within_their_budget(a, size):
    """A query chunk holds at most MAX_RANGES long runs and `size` other keys; each is filtered as given."""
    from gestore_retention.graph.keys import MAX_RANGES, RANGE_FROM, key_filter

    ks = KeySet(a)
    chunks = list(ks.query_chunks(size))
    assert all(isinstance(c, KeySet) and c for c in chunks)
    assert sorted(k for c in chunks for k in c if type(k) is int) == sorted({k for k in a if type(k) is int})
    assert KeySet().union(*chunks) == ks and sum(len(c) for c in chunks) == len(ks)
    for c in chunks:
        runs = [stop - start for start, stop in zip(c._starts, c._stops)]
        assert sum(1 for n in runs if n >= RANGE_FROM) <= MAX_RANGES
        assert sum(n for n in runs if n < RANGE_FROM) + len(c._other) <= size
        key_filter("pk", c)  # a KeySet chunk is a valid filter


def test_a_long_run_is_one_query_chunk():
    ks = KeySet(range(1, 1_000_001)) | KeySet([2_000_000, 2_000_002])
    (chunk,) = ks.query_chunks(1000)
    assert len(chunk) == 1_000_002
    from gestore_retention.graph.keys import key_filter

    q = key_filter("pk", chunk)
    assert ("pk__in", [2_000_000, 2_000_002]) in q.children
    probes = [0, 1, 500_000, 1_000_000, 1_000_001, 2_000_000, 2_000_001, 2_000_002]
    assert [n for n in probes if _matches(q, n)] == [1, 500_000, 1_000_000, 2_000_000, 2_000_002]
