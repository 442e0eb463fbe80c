"""DebtorIndex: the debtors by name as the orders flow reads them once per run, 32 bytes a
debtor (whole records only where the caller keeps them)."""

from __future__ import annotations

import tracemalloc

import pytest

from bbvisma.buchhaltungsbutler.models import Debtor
from bbvisma.flows.debtorindex import DebtorIndex


def debtor(number: str, name: str, email: str | None = None) -> Debtor:
    return Debtor(postingaccount_number=number, name=name, email=email)


def test_names_answer_their_debtors_and_other_names_none():
    index = DebtorIndex()
    index.append("müller gmbh", debtor("10001", "Müller GmbH", "a@mueller.de"))
    index.append("müller gmbh", debtor("10002", "MÜLLER  GmbH", "b@mueller.de"))
    index.append("huber bau", debtor("10003", "Huber Bau"))
    index.seal()
    assert len(index) == 3
    assert [c.number for c in index.named("huber bau")] == ["10003"]
    both = index.named("müller gmbh")
    assert sorted(c.number for c in both) == ["10001", "10002"]
    assert [c.number for c in both if c.has_email("b@mueller.de")] == ["10002"]
    assert not any(c.has_email(None) or c.has_email("B@mueller.de") for c in both)  # exact
    assert index.named("müller") == [] and index.named("") == []


def test_account_numbers_come_back_as_written_numeric_or_not():
    numbers = ["10001", "0042", "D-7", "99999999999999999999", "7"]
    index = DebtorIndex()
    for number in numbers:
        index.append(f"name {number}", debtor(number, f"Name {number}"))
    index.seal()
    assert [index.named(f"name {n}")[0].number for n in numbers] == numbers


def test_whole_records_only_where_kept():
    index = DebtorIndex()
    kept = debtor("10001", "Neu GmbH", "neu@example.de")
    index.append("neu gmbh", kept, keep=True)
    index.append("alt gmbh", debtor("10002", "Alt GmbH"))
    index.seal()
    assert index.record("10001") == kept
    assert index.record("10002") is None  # linked: its customer comes from the link


def test_reading_before_seal_and_appending_after_are_refused():
    index = DebtorIndex()
    index.append("a", debtor("1", "A"))
    with pytest.raises(RuntimeError):
        index.named("a")
    index.seal()
    with pytest.raises(RuntimeError):
        index.append("b", debtor("2", "B"))


def test_ten_thousand_debtors_cost_32_bytes_each_not_their_records():
    """A dict of name -> [Debtor] held 1.2 KiB a debtor (12 MiB for 10 000): the run's memory
    grew with the company's debtors."""
    count = 10_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = DebtorIndex()
        for n in range(count):
            number, name = str(10_000 + n), f"Kunde {n} GmbH"
            index.append(name.casefold(), debtor(number, name, f"k{n}@x.de"))
        index.seal()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == count
    assert held < 40 * count, f"{held / count:.0f} bytes a debtor"
    assert [c.number for c in index.named("kunde 4711 gmbh")] == ["14711"]
