"""HashIndex: the compact per-run index (16 bytes a key) behind the customers' lookups."""

from __future__ import annotations

import pytest

from bbvisma import hashindex
from bbvisma.flows.customers import CustomerIndex
from bbvisma.hashindex import HashIndex, text_hash


def sealed(pairs):
    index = HashIndex()
    for key, value in pairs:
        index.append(key, value)
    return index.seal()


def test_a_miss_is_certain_and_a_hit_carries_the_value_hash():
    index = sealed([(f"C{n}", f"name {n}") for n in range(1000)])
    assert len(index) == 1000
    assert "C999" in index and "C1000" not in index
    assert index.value_hash("C7") == text_hash("name 7")
    assert index.value_hash("C7") != text_hash("name 8")
    assert index.value_hash("nope") is None


def test_a_key_without_value_is_present_with_value_hash_zero():
    index = sealed([("a@example.com", None)])
    assert index.value_hash("a@example.com") == 0


def test_keys_added_after_seal_are_found_before_and_after_the_merge(monkeypatch):
    monkeypatch.setattr(hashindex, "MERGE_EVERY", 4)
    index = sealed([("old", "x")])
    for n in range(10):  # two merges into the sorted arrays, two keys still recent
        index.add(f"new{n}", f"v{n}")
    assert len(index) == 11
    assert all(index.value_hash(f"new{n}") == text_hash(f"v{n}") for n in range(10))
    assert "old" in index and "new10" not in index


def test_reading_before_seal_and_appending_after_are_refused():
    index = HashIndex()
    index.append("k")
    with pytest.raises(RuntimeError):
        index.value_hash("k")
    index.seal()
    with pytest.raises(RuntimeError):
        index.append("k2")


def test_customer_index_answers_numbers_emails_and_corporate_ids():
    customers = [
        {
            "number": f"{n:06d}",
            "name": f"Kunde {n} GmbH",
            "corporateId": f"DE{n:09d}",
            "mainContact": {"email": f"Kunde{n}@example.de"},
        }
        for n in range(100)
    ]
    index = CustomerIndex(iter(customers))
    assert "kunde9@example.de" in index.emails  # e-mails are kept lower-case
    assert "DE000000009" in index.corporate_ids and "DE000000100" not in index.corporate_ids
    assert index.numbers.value_hash("000009") == text_hash("kunde 9 gmbh")
    index.add({"number": "X1", "name": "Neu", "email": "neu@example.de"})
    assert "X1" in index.numbers and "neu@example.de" in index.emails


def test_keys_appended_over_many_runs_are_all_found_in_order(monkeypatch):
    monkeypatch.setattr(hashindex, "RUN", 7)  # 1000 keys: 143 sorted runs merged by seal()
    index = sealed([(f"C{n}", f"name {n}") for n in range(1000)])
    assert len(index) == 1000
    assert all(index.value_hash(f"C{n}") == text_hash(f"name {n}") for n in range(1000))
    assert list(index._keys) == sorted(index._keys)
    assert "C1000" not in index


def test_building_an_index_needs_little_beside_the_index_itself():
    import tracemalloc

    pairs = [(f"C{n}", f"name {n}") for n in range(50_000)]
    tracemalloc.start()
    try:
        index = sealed(pairs)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = 16 * len(index)  # two arrays of 64-bit hashes
    # the merge holds the runs and the merged arrays at once (2 x size) plus one run; a sort of
    # all keys at once needed some 80 bytes a key besides
    assert peak < 2.5 * size, (peak, size)


def test_a_packed_pair_sorts_by_its_key_hash_and_unpacks_to_the_pair():
    extremes = [-(2**63), -1, 0, 1, 2**63 - 1]
    pairs = [(k, v) for k in extremes for v in extremes]
    packed = [hashindex._pack(k, v) for k, v in pairs]
    assert [hashindex._unpack(p) for p in packed] == pairs
    assert [hashindex._unpack(p)[0] for p in sorted(packed)] == sorted(k for k, _v in pairs)
