"""The fault suite (``bench/faults.py``), asserted row by row.

Each case injects one fault into a real run of a real flow against both simulators, lets the
schedule run the flow again after the outage, then proves against the simulators' state --
not against what the flow believes -- that nothing was doubled in Visma.net, nothing was lost
(every source record is in Visma.net or parked with its cause), the watermark skipped nothing
and every RecordResult tells the truth. ``python -m bench faults`` prints the same rows.

Cases that expose a known defect of a flow are strict xfails: the day the defect is fixed,
the test fails as XPASS and the entry in ``bench.faults.KNOWN_DEFECTS`` must go.
"""

from __future__ import annotations

import functools

import pytest

from bbvisma.engine import Action
from bbvisma.vismanet.client import VismaClient
from bench.faults import (
    BATCH,
    FaultCase,
    FaultOutcome,
    FaultSink,
    LockStep,
    build_cases,
    run_case,
    table,
)

CASES = build_cases()
BY_ID = {case.id: case for case in CASES}


@functools.cache
def outcome_of(case_id: str) -> FaultOutcome:
    """Each case runs once per test session, whichever test asks first."""
    return run_case(BY_ID[case_id])


def _param(case: FaultCase):
    marks = []
    if case.known_defect:
        marks.append(pytest.mark.xfail(strict=True, reason=case.known_defect))
    return pytest.param(case, id=case.id.replace(" ", "_"), marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_fault_leaves_no_duplicate_no_lost_record_and_a_truthful_log(case: FaultCase):
    outcome = outcome_of(case.id)
    assert outcome.duplicates == 0, outcome.outcome
    assert outcome.lost == 0, outcome.outcome
    assert outcome.problems == [], outcome.outcome
    assert outcome.ok


def test_every_fault_of_the_brief_is_in_the_suite_for_every_flow():
    names = {(c.flow, c.name) for c in CASES}
    for flow in ("customers", "products", "orders"):
        for fault in (
            "timeout on create (committed, answer lost)",
            "5xx burst",
            "429 storm",
            "malformed JSON",
            "wrong Visma.net credentials mid-run",
            "connection dropped after commit",
            "worker killed mid-batch",
            "two runs at once",
            "wrong BB credentials mid-run",
        ):
            assert (flow, fault) in names


def test_faults_really_bite_the_first_run():
    """A fault suite whose faults never fire proves nothing: the faulty runs show errors,
    aborts or kills where the fault says so."""
    burst = outcome_of("customers:5xx burst")
    assert burst.first_run.get("error"), burst
    wrong = outcome_of("orders:wrong Visma.net credentials mid-run")
    assert any("aborted" in note for note in wrong.notes), wrong
    assert wrong.first_run.get("create") == 4  # the 4 before the secret changed, no more
    killed = outcome_of("products:worker killed mid-batch")
    assert killed.first_run == {"create": BATCH + 2}
    assert any("killed" in note for note in killed.notes)


def test_a_lost_create_answer_is_recovered_by_lookup_without_a_second_create():
    outcome = outcome_of("orders:connection dropped after commit")
    assert outcome.first_run == {"create": outcome.records}  # recovered inside the same run
    assert outcome.duplicates == 0


def test_table_has_one_row_per_outcome_with_the_counts():
    outcome = outcome_of(CASES[0].id)
    text = table([outcome])
    header, rule, row = text.splitlines()
    assert header.startswith("| fault | flow | records | duplicates | lost | parked |")
    assert row.startswith(f"| {CASES[0].name} | {CASES[0].flow} | {outcome.records} | 0 | 0 |")


def test_fault_sink_hook_fires_once_after_k_records():
    fired = []
    sink = FaultSink(after=2, hook=lambda: fired.append(len(sink.results)))
    from bbvisma.engine import RecordResult

    for n in range(4):
        sink.record(RecordResult("customer", str(n), Action.CREATE, target_key=str(n)))
    assert fired == [2]


def test_lock_step_lets_a_lone_thread_through():
    gate = LockStep(timeout=0.5)
    gate.join()
    gate.enter()  # its own turn
    gate.leave()
    gate.enter()  # the only participant: the turn comes back to it
    gate.leave()


def test_the_index_cases_look_receipts_up_in_one_list_read_and_lost_answers_for_real(
    monkeypatch,
):
    """The orders cases "..., per-run index" run with the index (else they would prove
    nothing new): no per-record lookup before a create, a real one for each lost answer."""
    reads: list[dict] = []
    original = VismaClient.get_json

    def spy(self, path, params=None):
        if path == "/v1/customerinvoice":
            reads.append(dict(params or {}))
        return original(self, path, params)

    monkeypatch.setattr(VismaClient, "get_json", spy)
    outcome = run_case(BY_ID["orders:connection dropped after commit, per-run index"])
    assert outcome.ok, outcome.outcome
    lookups = [p["externalReference"] for p in reads if "externalReference" in p]
    assert len(lookups) == 2 == len(set(lookups))  # the two dropped answers
    index = [p for p in reads if "createdDateTime" in p and p["createdDateTime"] < "2025-06-02"]
    assert len(index) == 1
