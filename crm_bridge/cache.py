"""A small TTL cache for CRM lookups (sans-IO: the caller passes the time)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class TtlCache(Generic[K, V]):
    """LRU-bounded cache whose entries expire ``ttl`` seconds after they were stored.

    ``get_stale`` returns an expired entry too: when the CRM is down, the last known customer is better on the
    pop than nothing (it is marked stale).
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | object:
        item = self._data.get(key)
        if item is None or now - item[0] > self.ttl:
            return _MISSING
        self._data.move_to_end(key)
        return item[1]

    def get_stale(self, key: K) -> V | object:
        item = self._data.get(key)
        return _MISSING if item is None else item[1]

    def put(self, key: K, value: V, now: float) -> None:
        self._data[key] = (now, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


MISSING = _MISSING
