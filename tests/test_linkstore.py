"""Link store: the decision create/update/skip, the content hash, the memory stores."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from store_fixtures import NullLinkStore

from bbvisma.linkstore import (
    Action,
    Link,
    MemoryDocumentCache,
    MemoryLinkStore,
    canonical_json,
    content_hash,
    decide,
)


# --------------------------------------------------------------------------------------------
# decide()
# --------------------------------------------------------------------------------------------
def test_decide_without_link_creates():
    assert decide(None, "h1") is Action.CREATE


def test_decide_link_without_target_key_creates():
    assert decide(Link("customer", "10004", None, "h1"), "h1") is Action.CREATE


def test_decide_changed_hash_updates_and_same_hash_skips():
    link = Link("customer", "10004", "C0001", "h1")
    assert decide(link, "h2") is Action.UPDATE
    assert decide(link, "h1") is Action.SKIP


def test_decide_flagged_link_without_hash_updates():
    assert decide(Link("order", "R1", "SO-1", None), "h1") is Action.UPDATE


# --------------------------------------------------------------------------------------------
# content_hash()
# --------------------------------------------------------------------------------------------
def test_content_hash_is_stable_across_key_order():
    a = {"name": "ACME", "mainAddress": {"city": "Wien", "countryId": "AT"}, "lines": [1, 2]}
    b = {"lines": [1, 2], "mainAddress": {"countryId": "AT", "city": "Wien"}, "name": "ACME"}
    assert content_hash(a) == content_hash(b)


def test_content_hash_treats_equal_numbers_alike_whatever_their_type():
    forms = [19.9, Decimal("19.90"), Decimal("1.990E+1"), Decimal("19.9000")]
    assert len({content_hash({"unitPrice": f}) for f in forms}) == 1
    assert (
        content_hash({"q": 5}) == content_hash({"q": 5.0}) == content_hash({"q": Decimal("5.00")})
    )
    assert content_hash({"q": Decimal("-0.00")}) == content_hash({"q": 0})


def test_content_hash_keeps_numbers_and_strings_apart():
    assert content_hash({"unitPrice": 19.9}) != content_hash({"unitPrice": "19.9"})
    assert content_hash({"flag": True}) != content_hash({"flag": 1})
    assert content_hash({"x": None}) != content_hash({})


def test_content_hash_changes_with_any_value_and_list_order():
    base = {"name": "ACME", "lines": [{"sku": "A"}, {"sku": "B"}]}
    assert content_hash(base) != content_hash({**base, "name": "ACME "})
    assert content_hash(base) != content_hash({**base, "lines": [{"sku": "B"}, {"sku": "A"}]})


def test_content_hash_dates_are_their_iso_text():
    assert content_hash({"d": dt.date(2024, 3, 5)}) == content_hash({"d": "2024-03-05"})
    assert canonical_json({"b": [1, 2.5], "a": "ß"}) == '{"a":"ß","b":[1,2.5]}'


def test_content_hash_refuses_what_it_cannot_hash_stably():
    with pytest.raises(TypeError):
        content_hash({"x": object()})
    with pytest.raises(ValueError):
        content_hash({"x": float("nan")})


# --------------------------------------------------------------------------------------------
# MemoryLinkStore
# --------------------------------------------------------------------------------------------
def fixed_clock():
    return dt.datetime(2024, 3, 5, 12, 0, tzinfo=dt.timezone.utc)


def test_put_then_get_and_upsert_keeps_meta_unless_replaced():
    store = MemoryLinkStore(clock=fixed_clock)
    link = store.put("customer", "10004", "C0001", "h1", {"number": "C0001"})
    assert link.synced_at == fixed_clock()
    assert store.get("customer", "10004") == link
    store.put("customer", "10004", "C0001", "h2")
    assert store.get("customer", "10004").meta == {"number": "C0001"}
    assert store.get("customer", "10004").content_hash == "h2"
    store.put("customer", "10004", "C0001", "h3", {})
    assert store.get("customer", "10004").meta == {}
    assert len(store) == 1


def test_links_are_separated_by_entity():
    store = MemoryLinkStore()
    store.put("customer", "1", "C1", "h")
    assert store.get("order", "1") is None


def test_get_many_returns_existing_links_in_one_call():
    store = MemoryLinkStore()
    for key in ("a", "b", "c"):
        store.put("product", key, f"T-{key}", "h")
    store.calls.clear()
    found = store.get_many("product", ["a", "c", "missing"])
    assert set(found) == {"a", "c"}
    assert found["c"].target_key == "T-c"
    assert store.calls == {"get_many": 1}


def test_find_by_target_follows_a_changed_target_key():
    store = MemoryLinkStore()
    store.put("customer", "10004", "C0001", "h")
    assert store.find_by_target("customer", "C0001").source_key == "10004"
    store.put("customer", "10004", "C0002", "h")
    assert store.find_by_target("customer", "C0001") is None
    assert store.find_by_target("customer", "C0002").source_key == "10004"


def test_links_handed_out_are_copies():
    store = MemoryLinkStore()
    store.put("customer", "1", "C1", "h", {"a": 1})
    link = store.get("customer", "1")
    link.meta["a"] = 2
    link.content_hash = "tampered"
    assert store.get("customer", "1").meta == {"a": 1}
    assert store.get("customer", "1").content_hash == "h"


def test_memory_link_store_is_thread_safe_under_concurrent_puts():
    store = MemoryLinkStore()

    def work(offset):
        for i in range(500):
            store.put("order", f"{offset}-{i}", f"T{offset}-{i}", "h")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 2000
    assert store.calls["put"] == 2000


# --------------------------------------------------------------------------------------------
# MemoryDocumentCache
# --------------------------------------------------------------------------------------------
def test_document_cache_hits_only_for_the_same_modified_stamp():
    cache = MemoryDocumentCache()
    assert cache.get("R1", "2024-03-05 10:00:00") is None
    cache.put("R1", "2024-03-05 10:00:00", {"number": "INV-1"})
    assert cache.get("R1", "2024-03-05 10:00:00") == {"number": "INV-1"}
    assert cache.get("R1", "2024-03-06 09:00:00") is None  # the receipt changed: parse again
    cache.put("R1", "2024-03-06 09:00:00", {"number": "INV-1", "v": 2})
    assert cache.get("R1", "2024-03-05 10:00:00") is None  # only the newest is kept
    assert (cache.hits, cache.misses) == (1, 3)
    assert len(cache) == 1


def test_document_cache_bounded_drops_least_recently_used():
    cache = MemoryDocumentCache(max_entries=2)
    cache.put("R1", "m", {"n": 1})
    cache.put("R2", "m", {"n": 2})
    assert cache.get("R1", "m") == {"n": 1}  # R1 now most recent
    cache.put("R3", "m", {"n": 3})
    assert cache.get("R2", "m") is None
    assert cache.get("R1", "m") == {"n": 1}
    assert len(cache) == 2


# --------------------------------------------------------------------------------------------
# guard(): the per-record lock
# --------------------------------------------------------------------------------------------
def test_default_guard_of_a_store_is_a_no_op_that_never_blocks():
    store = NullLinkStore()  # does not override guard(): the ABC's default
    with store.guard("customer", "10001"), store.guard("customer", "10001"):
        entered = threading.Event()
        other = threading.Thread(target=lambda: _enter(store, "customer", "10001", entered))
        other.start()
        other.join(timeout=2)
    assert entered.is_set()


def _enter(store, entity, key, entered, leave=None):
    with store.guard(entity, key):
        entered.set()
        if leave is not None:
            leave.wait(timeout=5)


def test_memory_guard_makes_a_second_thread_wait_for_the_same_record():
    store = MemoryLinkStore()
    entered = threading.Event()
    with store.guard("customer", "10001"):
        other = threading.Thread(target=_enter, args=(store, "customer", "10001", entered))
        other.start()
        # the other thread cannot get in while this one holds the record's guard
        assert not entered.wait(timeout=0.1)
    other.join(timeout=2)
    assert entered.is_set()


def test_memory_guard_does_not_block_other_records_or_entities():
    store = MemoryLinkStore()
    with store.guard("customer", "10001"):
        for entity, key in (("customer", "10002"), ("order", "10001")):
            entered = threading.Event()
            other = threading.Thread(target=_enter, args=(store, entity, key, entered))
            other.start()
            other.join(timeout=2)
            assert entered.is_set(), (entity, key)


def test_memory_guard_is_reentrant_in_one_thread():
    store = MemoryLinkStore()
    with store.guard("customer", "10001"), store.guard("customer", "10001"):
        store.put("customer", "10001", "C1", "h")
    assert store.get("customer", "10001").target_key == "C1"
    assert store.calls["guard"] == 2


def test_memory_guard_keeps_a_lock_only_while_it_is_held_or_awaited():
    store = MemoryLinkStore()
    for n in range(2000):
        with store.guard("order", str(n)):
            assert store.guards_alive() == 1
    assert store.guards_alive() == 0  # 2000 records guarded, nothing kept


def test_memory_guard_waiter_keeps_the_lock_alive_until_it_got_through():
    store = MemoryLinkStore()
    entered, leave = threading.Event(), threading.Event()
    holder = threading.Thread(target=_enter, args=(store, "customer", "1", entered, leave))
    holder.start()
    assert entered.wait(timeout=2)
    waiter_in = threading.Event()
    waiter = threading.Thread(target=_enter, args=(store, "customer", "1", waiter_in))
    waiter.start()
    assert not waiter_in.wait(timeout=0.05)
    assert store.guards_alive() == 1  # one lock, shared by holder and waiter
    leave.set()
    holder.join(timeout=2)
    waiter.join(timeout=2)
    assert waiter_in.is_set()
    assert store.guards_alive() == 0
