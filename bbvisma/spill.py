"""A key -> value map that keeps a bounded number of values in memory and spills the rest to
a private temporary SQLite database.

Why: the products (and prices) flows fold every e-invoice line into one entry per SKU, and
BuchhaltungsButler has no product endpoint to page through instead -- the fold *is* the
source. In a dict the fold costs about half a KiB per SKU for the whole run; a tenant with
100 000 SKUs would hold 50 MiB per run and worker. :class:`SpillMap` keeps at most
``memory_items`` values in Python's heap and the rest on disk, so a run's memory stays flat
however many SKUs there are, and a small catalog never touches the disk at all.

How:

* **Below the bound** it is an ordered dict; no database exists.
* **Beyond it** the least recently used values are written (pickled) to a table of a SQLite
  database opened with an empty file name: SQLite creates a private temporary file and unlinks
  it at once (the file has no name in any directory while it is open, and it is gone when the
  connection closes or the process dies). The values read back are only ever the bytes this
  map wrote there, which is why unpickling them is safe.
* SQLite's own memory (outside tracemalloc's view) is bounded explicitly: a page cache of
  :data:`CACHE_KIB`, no journal, temporary sort data in files.
* Values are mutable: :meth:`get` brings a value into memory and the caller may change it in
  place; it is written back when it is evicted. Eviction happens only in :meth:`trim`, which the
  owner calls at a point where it holds no value it is still about to change (the catalog:
  after each document), so no change can be lost between a ``get`` and the write-back.
* :meth:`items` yields every entry sorted by key (SQLite's ``BINARY`` collation compares
  UTF-8 bytes, which is the order of Python's ``sorted`` on ``str``), streamed row by row.

Not thread-safe, like the dict it replaces: one map belongs to one flow instance.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

__all__ = ["CACHE_KIB", "SpillMap"]

#: SQLite page cache of one spilled map, in KiB (``PRAGMA cache_size``)
CACHE_KIB = 256


class SpillMap:
    """``str`` key -> picklable value; at most ``memory_items`` values in memory after each
    :meth:`trim` (see the module docstring)."""

    def __init__(self, memory_items: int):
        if memory_items < 1:
            raise ValueError("memory_items must be at least 1")
        self.memory_items = memory_items
        #: the values in memory, least recently used first
        self._front: OrderedDict[str, Any] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        #: keys in the map (in memory, on disk or both)
        self._count = 0
        #: open :meth:`items` iterations: no write may happen under them
        self._reading = 0

    def __len__(self) -> int:
        return self._count

    @property
    def in_memory(self) -> int:
        """How many values are in memory now."""
        return len(self._front)

    @property
    def spilled(self) -> bool:
        """Whether values went to disk (the map outgrew ``memory_items`` at some point)."""
        return self._db is not None

    # -- reading and writing ----------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The value of ``key`` (``None`` if absent), kept in memory until the next
        :meth:`trim` at least: the caller may change it in place."""
        self._writing()
        value = self._front.get(key)
        if value is not None:
            self._front.move_to_end(key)
            return value
        value = self._load(key)
        if value is not None:
            self._front[key] = value
        return value

    def peek(self, key: str) -> Any | None:
        """The value of ``key`` (``None`` if absent) for reading only: a value read from disk
        is not kept, so changing it changes nothing."""
        value = self._front.get(key)
        return value if value is not None else self._load(key)

    def add(self, key: str, value: Any) -> None:
        """A new key (the caller found it absent with :meth:`get`); ``value`` must not be
        ``None``."""
        self._writing()
        self._front[key] = value
        self._count += 1

    def trim(self) -> None:
        """With more than ``memory_items`` values in memory, write the least recently used to
        disk until a quarter of the bound is free again (so a transaction writes many rows,
        not the few one document adds)."""
        self._writing()
        if len(self._front) <= self.memory_items:
            return
        excess = len(self._front) - (self.memory_items - self.memory_items // 4)
        self._store(self._front.popitem(last=False) for _ in range(excess))

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every ``(key, value)``, sorted by key, streamed; no :meth:`get`, :meth:`add` or
        :meth:`trim` may happen until the iteration ends (like a dict's)."""
        self._reading += 1
        try:
            if self._db is None:
                for key in sorted(self._front):
                    yield key, self._front[key]
                return
            # everything to disk, then one ordered scan (the primary key's order)
            front, self._front = self._front, OrderedDict()
            self._store(front.items())
            for key, blob in self._db.execute("SELECT key, value FROM item ORDER BY key"):
                yield key, pickle.loads(blob)
        finally:
            self._reading -= 1

    def close(self) -> None:
        """Drop the database (its file is already unlinked; closing frees it)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- internals ----------------------------------------------------------------------------
    def _writing(self) -> None:
        if self._reading:
            raise RuntimeError("SpillMap changed during iteration")

    def _load(self, key: str) -> Any | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT value FROM item WHERE key = ?", (key,)).fetchone()
        return None if row is None else pickle.loads(row[0])

    def _store(self, pairs: Any) -> None:
        db = self._database()
        with db:  # one transaction per batch, not per row
            db.executemany(
                "INSERT OR REPLACE INTO item (key, value) VALUES (?, ?)",
                ((key, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)) for key, value in pairs),
            )

    def _database(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect("")  # private temporary file, unlinked by SQLite at once
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA temp_store = FILE")
            db.execute(
                "CREATE TABLE item (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
            self._db = db
        return self._db
