"""Shared pytest fixtures (keep this file small: helpers live in the test modules)."""

from __future__ import annotations

import pytest

from bbvisma.simulators.buchhaltungsbutler import BBSimulator, default_seed
from bbvisma.simulators.common import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    """Virtual time shared by a client's pacer/back-off and a simulator's quota."""
    return FakeClock()


@pytest.fixture
def bb_seed() -> dict:
    """The ``buchhaltungsbutler`` section of the default seed (a fresh copy per test)."""
    return default_seed()


@pytest.fixture
def bb_sim(fake_clock, bb_seed) -> BBSimulator:
    """The BuchhaltungsButler simulator with the default seed, on the fake clock."""
    sim = BBSimulator(clock=fake_clock)
    sim.load_seed(bb_seed)
    return sim


class BBContractGuard:
    """WSGI middleware: validates every API answer of the BB simulator against the swagger.

    Answers the contract cannot describe are skipped on purpose and only those: non-JSON
    bodies (404 HTML, injected proxy pages, malformed JSON) and the 501 of unsimulated paths.
    """

    def __init__(self, sim: BBSimulator):
        self.sim = sim
        self.checked = 0
        self.violations: list[str] = []

    def __call__(self, environ, start_response):
        import json as _json

        from bbvisma.simulators.bb_contract import ContractError
        from bbvisma.simulators.buchhaltungsbutler import API_PREFIX

        seen = {}

        def capture(status, headers, exc_info=None):
            seen["status"], seen["headers"] = int(status.split()[0]), headers
            return start_response(status, headers, exc_info)

        body = b"".join(self.sim(environ, capture))
        path = environ.get("PATH_INFO", "")
        if path.startswith(API_PREFIX + "/") and seen.get("status") != 501:
            try:
                payload = _json.loads(body)
            except ValueError:
                payload = None
            if payload is not None:
                self.checked += 1
                try:
                    self.sim.contract.validate_response(
                        path[len(API_PREFIX) :], seen["status"], payload
                    )
                except ContractError as exc:
                    self.violations.append(str(exc))
        return [body]


@pytest.fixture
def bb_app(bb_sim):
    """``bb_sim`` behind a :class:`BBContractGuard`; the test fails on any contract breach."""
    guard = BBContractGuard(bb_sim)
    yield guard
    assert guard.violations == [], guard.violations
