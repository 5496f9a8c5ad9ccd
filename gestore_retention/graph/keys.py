"""Engine: KeySet, an immutable set of primary keys that stays small for integers.

A subject of a million rows has a million keys per role. As a Python set that
costs 60-100 bytes a key, and a walk holds several such sets at once, so
memory would grow with the subject. Integer keys (AutoField, BigAutoField,
the common case) are kept here as sorted, disjoint runs [start, stop) in two
arrays of 64-bit integers: 16 bytes a run, and rows inserted together (a
tenant's bulk insert, a ledger's entries) share one run. Other keys (UUIDs,
strings, composite tuples) are kept in a frozenset.

A KeySet is a `collections.abc.Set`: it compares equal to a set or frozenset
with the same members, and iterates in ascending order (integers first).
"""
import heapq
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Set

from django.db.models import Q

_MIN, _MAX = -(2**63), 2**63 - 1  # a run's stop (last key + 1) must fit in a signed 64-bit slot
FLUSH_AT = 8192  # integer keys a builder buffers before sorting them into runs (bounds its memory)


def _is_int(value):
    return type(value) is int and _MIN <= value < _MAX  # noqa: E721  (bool is not a key)


def sort_key(value):
    """Order keys of one model: None first, then by type name and value."""
    return (str(type(value)), value) if value is not None else ("", "")


def _coalesce(pairs):
    """Return (starts, stops) of the union of (start, stop) pairs given in ascending start order."""
    starts, stops = array("q"), array("q")
    for start, stop in pairs:
        if stops and start <= stops[-1]:
            if stop > stops[-1]:
                stops[-1] = stop
        else:
            starts.append(start)
            stops.append(stop)
    return starts, stops


def _runs_of_sorted(values):
    """Return (starts, stops) of ascending integers (duplicates allowed)."""
    starts, stops = array("q"), array("q")
    for v in values:
        if stops and v <= stops[-1]:
            if v == stops[-1]:
                stops[-1] = v + 1
        else:
            starts.append(v)
            stops.append(v + 1)
    return starts, stops


class KeySet(Set):
    """An immutable set of primary keys; integers stored as runs."""

    __slots__ = ("_starts", "_stops", "_other", "_len")

    def __init__(self, iterable=()):
        if isinstance(iterable, KeySet):
            self._set(iterable._starts, iterable._stops, iterable._other)
            return
        builder = KeySetBuilder()
        builder.update(iterable)
        built = builder.build()
        self._set(built._starts, built._stops, built._other)

    def _set(self, starts, stops, other):
        self._starts, self._stops, self._other = starts, stops, other
        self._len = sum(e - s for s, e in zip(starts, stops)) + len(other)

    @classmethod
    def _make(cls, starts, stops, other):
        new = cls.__new__(cls)
        new._set(starts, stops, frozenset(other))
        return new

    @classmethod
    def _from_iterable(cls, iterable):
        return cls(iterable)

    @staticmethod
    def of(values):
        """Return `values` as a KeySet, without copying one that is already a KeySet."""
        return values if isinstance(values, KeySet) else KeySet(values)

    # -- the Set protocol ---------------------------------------------------------
    def __contains__(self, key):
        if _is_int(key):
            i = bisect_right(self._starts, key) - 1
            return i >= 0 and key < self._stops[i]
        try:
            return key in self._other
        except TypeError:  # unhashable: not a key
            return False

    def __iter__(self):
        for start, stop in zip(self._starts, self._stops):
            yield from range(start, stop)
        if self._other:
            yield from sorted(self._other, key=sort_key)

    def __len__(self):
        return self._len

    __hash__ = Set._hash

    def __repr__(self):
        if self._len <= 10:
            return f"KeySet({{{', '.join(repr(k) for k in self)}}})"
        return f"KeySet(<{self._len} keys: {len(self._starts)} runs, {len(self._other)} others>)"

    def __reduce__(self):
        return (KeySet._make, (self._starts, self._stops, tuple(self._other)))

    # -- fast set algebra (runs against runs) ---------------------------------------
    def __or__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        other = KeySet.of(other)
        if not other:
            return self
        if not self:
            return other
        pairs = heapq.merge(zip(self._starts, self._stops), zip(other._starts, other._stops))
        return KeySet._make(*_coalesce(pairs), self._other | other._other)

    __ror__ = __or__

    def __sub__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        other = KeySet.of(other)
        if not self or not other:
            return self
        starts, stops = array("q"), array("q")
        b_starts, b_stops = other._starts, other._stops
        j, nb = 0, len(b_starts)
        for start, stop in zip(self._starts, self._stops):
            while j < nb and b_stops[j] <= start:
                j += 1
            k = j
            while start < stop:
                if k >= nb or b_starts[k] >= stop:
                    starts.append(start)
                    stops.append(stop)
                    break
                if b_starts[k] > start:
                    starts.append(start)
                    stops.append(b_starts[k])
                start = max(start, b_stops[k])
                k += 1
        return KeySet._make(starts, stops, self._other - other._other)

    def __rsub__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        return KeySet(other) - self

    def __and__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        other = KeySet.of(other)
        return self - (self - other)

    __rand__ = __and__

    # frozenset's method names, for callers written against it
    def union(self, *others):
        result = self
        for o in others:
            result = result | o
        return result

    def difference(self, *others):
        result = self
        for o in others:
            result = result - o
        return result

    def intersection(self, *others):
        result = self
        for o in others:
            result = result & o
        return result

    def issubset(self, other):
        return self <= KeySet.of(other)

    def chunks(self, size):
        """Yield lists of at most `size` keys, in ascending order, without building the whole list."""
        chunk = []
        for key in self:
            chunk.append(key)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


    def query_chunks(self, size):
        """Yield KeySets that together hold every key, each cheap to filter on in one query.

        A chunk holds at most MAX_RANGES long runs (each one range condition,
        however many keys it spans) and at most `size` other keys (an IN
        list): keys inserted together cost one query, not one per `size`
        keys. Rows come back through a cursor, so a wide chunk is not held in
        memory; a caller that needs the keys as a list uses `chunks()`.
        """
        starts, stops, ranges, singles = array("q"), array("q"), 0, 0
        for start, stop in zip(self._starts, self._stops):
            if stop - start >= RANGE_FROM:
                if ranges == MAX_RANGES:
                    yield KeySet._make(starts, stops, ())
                    starts, stops, ranges, singles = array("q"), array("q"), 0, 0
                starts.append(start)
                stops.append(stop)
                ranges += 1
                continue
            for key in range(start, stop):  # a short run: its keys go in the IN list, one by one
                if singles == size:
                    yield KeySet._make(starts, stops, ())
                    starts, stops, ranges, singles = array("q"), array("q"), 0, 0
                if stops and stops[-1] == key:
                    stops[-1] = key + 1
                else:
                    starts.append(key)
                    stops.append(key + 1)
                singles += 1
        if starts:
            yield KeySet._make(starts, stops, ())
        other = sorted(self._other, key=sort_key)
        for i in range(0, len(other), size):
            yield KeySet._make(array("q"), array("q"), other[i : i + size])


class KeySetBuilder:
    """Collect keys with bounded overhead; `build()` returns the KeySet.

    Integer keys are buffered and sorted into runs every FLUSH_AT keys, so a
    query's million keys never sit in a Python set.
    """

    def __init__(self):
        self._buffer = []
        self._segments = []  # [(starts, stops)]
        self._other = set()

    def add(self, key):
        if _is_int(key):
            self._buffer.append(key)
            if len(self._buffer) >= FLUSH_AT:
                self._flush()
        else:
            self._other.add(key)

    def update(self, keys):
        if isinstance(keys, KeySet):
            if keys._starts:
                self._segments.append((keys._starts, keys._stops))
                if len(self._segments) > 16:
                    self._segments = [self._merged()]
            self._other |= keys._other
            return
        self.extend(keys)

    def extend(self, keys):
        """Add every key of an iterable (the loop of add(), inlined: it runs per row)."""
        buffer, other = self._buffer, self._other
        for key in keys:
            if type(key) is int and _MIN <= key < _MAX:  # noqa: E721  (as _is_int)
                buffer.append(key)
                if len(buffer) >= FLUSH_AT:
                    self._flush()
                    buffer = self._buffer
            else:
                other.add(key)

    def _flush(self):
        if self._buffer:
            self._buffer.sort()
            self._segments.append(_runs_of_sorted(self._buffer))
            self._buffer = []
        if len(self._segments) > 16:
            self._segments = [self._merged()]

    def _merged(self):
        pairs = heapq.merge(*(zip(starts, stops) for starts, stops in self._segments))
        return _coalesce(pairs)

    def build(self):
        self._flush()
        if not self._segments:
            starts, stops = array("q"), array("q")
        elif len(self._segments) == 1:
            starts, stops = self._segments[0]
        else:
            starts, stops = self._merged()
        return KeySet._make(starts, stops, self._other)


EMPTY = KeySet()

RANGE_FROM = 4  # consecutive integer keys that become one range
MAX_RANGES = 16  # more runs than this in one chunk: a plain IN list


def key_filter(name, keys):
    """Return a Q matching rows whose column `name` holds one of `keys` (a chunk).

    Runs of consecutive integers become `>= low AND <= high` conditions, the
    rest one `__in` list. A run holds every integer between its ends, so the
    rows matched are exactly those of `name__in=keys`; but Django prepares an
    IN list value by value (about 7 us each), and one range replaces a
    thousand of them when keys were inserted together. A KeySet (a chunk
    from `query_chunks`) is read run by run, never expanded into a list.
    """
    keys = KeySet.of(keys)
    runs = list(zip(keys._starts, keys._stops))
    ranges = [(start, stop - 1) for start, stop in runs if stop - start >= RANGE_FROM]
    if not ranges or len(ranges) > MAX_RANGES:
        return Q(**{f"{name}__in": list(keys)})
    singles = [k for start, stop in runs if stop - start < RANGE_FROM for k in range(start, stop)]
    singles += sorted(keys._other, key=sort_key)
    q = Q()
    for low, high in ranges:  # gte/lte, not range: a ForeignKey column has no __range lookup
        q |= Q(**{f"{name}__gte": low, f"{name}__lte": high})
    if singles:
        q |= Q(**{f"{name}__in": singles})
    return q
