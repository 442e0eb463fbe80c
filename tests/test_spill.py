"""SpillMap: a bounded number of values in memory, the rest in a private temporary database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bbvisma.spill import SpillMap

#: keys whose order differs between naive byte/locale orders and Python's code-point order
KEYS = ["b", "B", "a-2", "a-10", "Äpfel", "Zebra", "zebra", "é", "e", "10", "9", "€", "😀", "a"]


def filled(memory_items: int) -> SpillMap:
    spill = SpillMap(memory_items)
    for index, key in enumerate(KEYS):
        assert spill.get(key) is None
        spill.add(key, {"n": index})
        spill.trim()
    return spill


@pytest.mark.parametrize("memory_items", [1, 3, 100])
def test_items_come_sorted_like_python_sorts_strings_in_memory_and_spilled(memory_items):
    spill = filled(memory_items)
    assert spill.spilled == (memory_items < len(KEYS))
    assert len(spill) == len(KEYS)
    assert [key for key, _value in spill.items()] == sorted(KEYS)
    assert {key: value["n"] for key, value in spill.items()} == {k: i for i, k in enumerate(KEYS)}


def test_at_most_memory_items_stay_in_memory_after_a_trim():
    spill = filled(3)
    assert spill.in_memory == 3
    for key in ("b", "B", "Zebra", "é"):  # read back from disk: in memory until a trim
        spill.get(key)
    assert spill.in_memory == 3 + 4
    spill.trim()
    assert spill.in_memory == 3


def test_a_value_changed_after_get_survives_its_eviction_to_disk():
    spill = filled(2)
    spill.get("b")["n"] = "changed"
    for key in KEYS:  # push "b" out to disk
        spill.get(key)
        spill.trim()
    assert spill.peek("b") == {"n": "changed"}
    assert dict(spill.items())["b"] == {"n": "changed"}


def test_peek_reads_from_disk_without_keeping_the_value():
    spill = filled(1)
    value = spill.peek("b")
    assert value == {"n": 0}
    assert spill.in_memory == 1
    value["n"] = "lost"  # a copy: peek is for reading
    assert spill.peek("b") == {"n": 0}
    assert spill.peek("missing") is None


def test_writing_while_the_items_are_iterated_is_refused():
    spill = filled(2)
    items = spill.items()
    next(items)
    with pytest.raises(RuntimeError):
        spill.add("new", {})
    with pytest.raises(RuntimeError):
        spill.trim()
    assert spill.peek("b") == {"n": 0}  # reading is fine
    items.close()
    spill.add("new", {})  # after the iteration again


def test_the_database_file_is_unlinked_while_open_and_freed_on_close():
    """Nothing is left behind in any directory, even if the process dies mid-run."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc")

    def temp_files() -> set[str]:
        names = set()
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if "etilqs_" in target:  # SQLite's temporary file names
                names.add(target)
        return names

    before = temp_files()
    spill = SpillMap(2)
    for index in range(400):  # 1.6 MiB: more than SQLite's page cache, so it writes its file
        spill.add(f"k{index}", "x" * 4096)
        spill.trim()
    opened = temp_files() - before
    assert opened and all(name.endswith("(deleted)") for name in opened)
    spill.close()
    assert temp_files() - before == set()
