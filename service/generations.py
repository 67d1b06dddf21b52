"""A bounded map in two generations: what the service keeps of values it computed once
(reason texts by feature value, scores by branch key) without an LRU's bookkeeping."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Generations(Generic[K, V]):
    """A dict of at most ``size`` entries in two generations: new entries go to the young
    one; when it holds ``size // 2`` it becomes the old one and the old one is forgotten
    whole; an entry found in the old one moves back to the young.

    Evicting the oldest entry one at a time (``del d[next(iter(d))]``) makes each eviction
    scan the holes the evictions before it left at the front of the dict: once full, every
    new entry cost a scan of up to thousands of slots (ScoreConversion(200), whose time
    features give new values every call, went from 6 to 16 ms of CPU within a thousand
    calls). Plain dicts of values the cyclic garbage collector does not track stay
    untracked, which an ``OrderedDict`` or an ``lru_cache`` of containers does not.

    Not locked: :meth:`get` and :meth:`lookup` write too (what they find old moves young).
    From several threads under the GIL, a lookup racing a turnover misses, and two writes
    racing a turnover may forget a generation early: a cache may lose entries, never give
    a wrong value. Maps that must turn over together (a value kept in two parts) are
    written and moved under their owner's lock.
    """

    __slots__ = ("_half", "old", "young")

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        """The value of ``key`` (``None`` if none is kept), moved to the young generation
        if it was found in the old one."""
        value = self.young.get(key)
        if value is None:
            value = self.old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def lookup(self, keys: list[K]) -> tuple[list[V | None], list[int]]:
        """:meth:`get` of each key, and the positions of those none is kept for."""
        found = list(map(self.young.get, keys))
        miss = [i for i, value in enumerate(found) if value is None]
        if miss and self.old:
            old, still = self.old, []
            for i in miss:
                value = old.get(keys[i])
                if value is None:
                    still.append(i)
                else:
                    found[i] = value
                    self.put(keys[i], value)
            miss = still
        return found, miss

    def put(self, key: K, value: V) -> None:
        if len(self.young) >= self._half:
            self.old, self.young = self.young, {}
        self.young[key] = value

    def clear(self) -> None:
        self.young = {}
        self.old = {}
