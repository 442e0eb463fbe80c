"""The shared simulator machinery: clocks, fault scripting, request log, control API, serving."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from bbvisma.simulators.common import (
    Clock,
    FakeClock,
    FaultRule,
    Faults,
    RequestLog,
    SimulatorBase,
    json_response,
    serve,
    sim_http_client,
)


class Counter(SimulatorBase):
    """A minimal simulator: POST /count adds one and answers the total."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.total = 0

    def handle(self, request):
        if request.path != "/count":
            return json_response(404, {"error": "no"})
        if request.method == "POST":
            self.total += 1
        return json_response(200, {"total": self.total})

    def load_seed(self, section):
        self.remember_seed(section)
        self.total = section.get("total", 0)

    def dump_state(self):
        return {"total": self.total}

    def reset_state(self):
        self.total = 0


@pytest.fixture
def counter():
    sim = Counter(clock=FakeClock())
    sim.load_seed({"total": 5})
    return sim


# -- clocks -----------------------------------------------------------------------------------
def test_fake_clock_sleep_advances_time_without_waiting():
    clock = FakeClock(start=100.0)
    clock.sleep(30)
    clock.advance(2.5)
    assert clock.now() == 132.5
    assert clock.slept == 30
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_real_clock_reports_epoch_seconds():
    assert abs(Clock().now() - __import__("time").time()) < 5


# -- faults -----------------------------------------------------------------------------------
def test_fault_rule_skips_after_then_applies_times_then_stops():
    faults = Faults()
    faults.add("status", path="^/count$", method="post", after=1, times=2, status=500)
    hits = [faults.match("POST", "/count") for _ in range(5)]
    assert [h is not None for h in hits] == [False, True, True, False, False]
    assert hits[1].params == {"status": 500}


def test_fault_rule_matches_method_and_path_only():
    faults = Faults()
    faults.add("latency", path="receipts", method="GET", times=None, seconds=1)
    assert faults.match("POST", "/api/v1/receipts/get") is None
    assert faults.match("GET", "/api/v1/debtors") is None
    assert faults.match("GET", "/api/v1/receipts/get").kind == "latency"
    assert faults.match("GET", "/receipts").kind == "latency"  # unlimited


def test_unknown_fault_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule(kind="explode")


def test_fault_replace_takes_flat_and_nested_params_and_is_atomic():
    faults = Faults()
    faults.add("malformed")
    rules = faults.replace([{"kind": "status", "status": 502, "times": 3}])
    assert rules[0].params == {"status": 502} and rules[0].times == 3
    with pytest.raises(ValueError):
        faults.replace([{"kind": "status"}, {"no_kind": True}])
    assert [r.kind for r in faults.rules] == ["status"]


def test_request_log_numbers_entries_and_clears():
    log = RequestLog()
    log.add("POST", "/a", 200)
    log.add("POST", "/b", None, "drop_after_commit", company="x")
    assert [e["seq"] for e in log.entries] == [1, 2]
    assert log.entries[1] == {
        "seq": 2,
        "method": "POST",
        "path": "/b",
        "status": None,
        "fault": "drop_after_commit",
        "company": "x",
    }
    log.clear()
    assert len(log) == 0


# -- simulator base, in-process ---------------------------------------------------------------
def test_control_api_state_faults_and_reset(counter):
    client = sim_http_client(counter)
    assert client.post("/count").json() == {"total": 6}
    answer = client.post("/_sim/faults", json=[{"kind": "status", "status": 503, "times": 1}])
    assert answer.status_code == 200 and answer.json()[0]["kind"] == "status"
    assert client.post("/count").status_code == 503
    assert counter.total == 6  # a status fault answers without processing
    state = client.get("/_sim/state").json()
    assert state["state"] == {"total": 6}
    assert [(e["status"], e["fault"]) for e in state["requests"]] == [(200, None), (503, "status")]
    assert client.post("/_sim/reset").json() == {"reset": True}
    assert counter.total == 5 and len(counter.requests) == 0 and counter.faults.rules == []


def test_control_api_refuses_malformed_fault_rules(counter):
    client = sim_http_client(counter)
    answer = client.post("/_sim/faults", content=b'{"kind": "status"}')
    assert answer.status_code == 400 and "list" in answer.json()["error"]
    assert client.post("/_sim/nothing").status_code == 404


def test_drop_after_commit_in_process_commits_then_raises_remote_protocol_error(counter):
    client = sim_http_client(counter)
    counter.faults.add("drop_after_commit")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/count")
    assert counter.total == 6
    assert counter.requests.entries[-1]["status"] is None


def test_drop_loses_the_request_without_processing_it(counter):
    client = sim_http_client(counter)
    counter.faults.add("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/count")
    assert counter.total == 5


def test_timeout_in_process_commits_and_raises_read_timeout_when_longer_than_client(counter):
    client = sim_http_client(counter, timeout=2.0)
    counter.faults.add("timeout", seconds=5)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/count")
    assert counter.total == 6
    counter.faults.add("timeout", seconds=1)  # shorter than the client's timeout: answered
    assert client.post("/count").json() == {"total": 7}


def test_malformed_answers_200_with_a_body_that_is_not_json(counter):
    client = sim_http_client(counter)
    counter.faults.add("malformed")
    answer = client.post("/count")
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_latency_uses_the_simulator_clock(counter):
    counter.faults.add("latency", seconds=42)
    before = counter.clock.now()
    sim_http_client(counter).post("/count")
    assert counter.clock.now() - before == 42


# -- serving over real loopback HTTP ----------------------------------------------------------
def test_serve_runs_several_apps_on_free_loopback_ports(counter):
    other = Counter(clock=FakeClock())
    with serve([(0, counter), (0, other)]) as served:
        assert len(set(served.urls)) == 2
        assert all(u.startswith("http://127.0.0.1:") for u in served.urls)
        with httpx.Client() as client:
            assert client.post(served.url_for(counter) + "/count").json() == {"total": 6}
            assert client.post(served.url_for(other) + "/count").json() == {"total": 1}


def test_serve_refuses_non_loopback_hosts(counter):
    with pytest.raises(ValueError, match="loopback"):
        serve({0: counter}, host="0.0.0.0")


def test_served_drop_after_commit_closes_the_socket_without_a_byte(counter):
    counter.faults.add("drop_after_commit")
    with serve({0: counter}) as served:
        port = int(served.urls[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            assert sock.recv(1024) == b""
        assert counter.total == 6
        with httpx.Client() as client:  # the server keeps serving
            assert client.post(served.urls[0] + "/count").json() == {"total": 7}


def test_served_timeout_makes_a_short_client_timeout_give_up(counter):
    counter.faults.add("timeout", seconds=0.5)
    with serve({0: counter}) as served, httpx.Client(timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(served.urls[0] + "/count")
        assert counter.total == 6  # processed before the answer was held back


def test_served_control_api_accepts_fault_rules_as_json(counter):
    with serve({0: counter}) as served, httpx.Client() as client:
        url = served.urls[0]
        client.post(url + "/_sim/faults", content=json.dumps([{"kind": "status", "status": 500}]))
        assert client.post(url + "/count").status_code == 500
        assert client.post(url + "/count").status_code == 200
