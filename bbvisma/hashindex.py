"""A compact per-run index of keys read from a target list: 16 bytes per key.

The per-run indexes (the customers a run reads once from Visma.net instead of looking each new
debtor up) hold every record of the target: kept as dicts of strings they made a run's memory
grow with the size of the target company (3.9 MiB for 10 000 customers). A
:class:`HashIndex` keeps, per key, the 64-bit hash of the key and of one value (e.g. the
normalised name that a lookup compares) in two sorted ``array("q")``; membership is a binary
search.

What a hash index answers, and what it does not:

* a **miss is certain**: a key whose hash is not in the index is not in the list it was read
  from -- the caller needs no call to know the record does not exist;
* a **hit is probable**: two keys may share a 64-bit hash (for 10^5 keys, about one chance in
  3.6 x 10^9). A caller that acts on a hit must be able to confirm it (the Visma.net lookup it
  would have made without the index) or only compare hashes where a wrong "equal" is harmless.

Hashes are Python's ``hash(str)``: randomised per process, which is fine for an index that
lives for one run and is never stored.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

__all__ = ["HashIndex", "text_hash"]

#: keys added after the index was built are kept in a dict until there are this many, then
#: merged into the sorted arrays (one merge per this many additions)
MERGE_EVERY = 4096
#: keys appended while building are sorted in runs of this many, merged by :meth:`seal`: a
#: sort of every key at once would need some 80 bytes a key beside the index (Python ints and
#: a list of positions), five times the index itself
RUN = 4096


def text_hash(text: str | None) -> int:
    """The 64-bit hash of ``text`` (0 for ``None``)."""
    return 0 if text is None else hash(text)


class HashIndex:
    """Sorted 64-bit key hashes with one 64-bit value hash each. Build it with
    :meth:`append` for every key of the list, then :meth:`seal`; :meth:`add` afterwards for
    what the run creates."""

    __slots__ = ("_keys", "_values", "_recent", "_sealed", "_runs", "_pending")

    def __init__(self) -> None:
        self._keys = array("q")
        self._values = array("q")
        self._recent: dict[int, int] = {}
        self._sealed = False
        #: sorted runs of ``(keys, values)`` appended while building, and the run being filled
        self._runs: list[tuple[array, array]] = []
        self._pending: list[tuple[int, int]] = []

    def __len__(self) -> int:
        building = sum(len(keys) for keys, _values in self._runs) + len(self._pending)
        return len(self._keys) + len(self._recent) + building

    def append(self, key: str, value: str | None = None) -> None:
        """Add a key while building (unsorted until :meth:`seal`)."""
        if self._sealed:
            raise RuntimeError("HashIndex.append after seal(): use add()")
        self._pending.append(_pack(hash(key), text_hash(value)))
        if len(self._pending) >= RUN:
            self._close_run()

    def seal(self) -> HashIndex:
        """Merge what :meth:`append` collected; the index can be read from now on."""
        self._close_run()
        runs, self._runs = self._runs, []
        self._keys, self._values = _merged(_packed(keys, values) for keys, values in runs)
        self._sealed = True
        return self

    def add(self, key: str, value: str | None = None) -> None:
        """Add a key to a sealed index (what the run itself created)."""
        self._recent[hash(key)] = text_hash(value)
        if len(self._recent) >= MERGE_EVERY:
            recent = sorted(_pack(k, v) for k, v in self._recent.items())
            self._recent.clear()
            self._keys, self._values = _merged([_packed(self._keys, self._values), recent])

    def __contains__(self, key: str) -> bool:
        return self.value_hash(key) is not None

    def value_hash(self, key: str) -> int | None:
        """The value hash stored with ``key`` (0: stored without a value); ``None``: the key
        is certainly not in the index."""
        if not self._sealed:
            raise RuntimeError("HashIndex read before seal()")
        key_hash = hash(key)
        if key_hash in self._recent:
            return self._recent[key_hash]
        keys = self._keys
        at = bisect_left(keys, key_hash)
        if at < len(keys) and keys[at] == key_hash:
            return self._values[at]
        return None

    def _close_run(self) -> None:
        if not self._pending:
            return
        self._pending.sort()
        keys, values = array("q"), array("q")
        for packed in self._pending:
            key_hash, value_hash = _unpack(packed)
            keys.append(key_hash)
            values.append(value_hash)
        self._runs.append((keys, values))
        self._pending = []


# A (key hash, value hash) pair travels through the sorts and the merge as ONE int, key hash
# in the high bits: ints sort by key hash, and unlike tuples (which Python keeps in a free
# list once dropped) they are freed when done with.
_MASK = (1 << 64) - 1


def _pack(key_hash: int, value_hash: int) -> int:
    return (key_hash << 64) | (value_hash & _MASK)


def _unpack(packed: int) -> tuple[int, int]:
    value = packed & _MASK
    return packed >> 64, value - (1 << 64) if value >> 63 else value


def _packed(keys: array, values: array) -> Iterator[int]:
    return (_pack(k, v) for k, v in zip(keys, values, strict=True))


def _merged(runs: Iterable[Iterable[int]]) -> tuple[array, array]:
    """Sorted runs of packed pairs merged into two arrays, one pair at a time."""
    keys, values = array("q"), array("q")
    for packed in heapq.merge(*runs):
        key_hash, value_hash = _unpack(packed)
        keys.append(key_hash)
        values.append(value_hash)
    return keys, values
