"""The sales order types the setup assistant offers come from GET /v1/salesordertype."""

from bbvisma.simulators.common import FakeClock, sim_http_client
from bbvisma.simulators.vismanet import ContractGuard, VismaSimulator
from bbvisma.vismanet import VismaClient

BASE = "http://127.0.0.1:8072"


def make_client(app, clock):
    return VismaClient(
        base_url=BASE,
        token_url=f"{BASE}/connect/token",
        client_id="bbvisma-demo",
        client_secret="demo-secret-not-for-production",
        tenant_id="6c4a3f0e-demo-tenant",
        company_id="DEMO1",
        http_client=sim_http_client(app, BASE),
        sleep=clock.sleep,
        clock=clock.now,
    )


def test_order_types_are_listed_as_the_tenant_has_them_and_validate_against_the_spec():
    clock = FakeClock()
    sim = VismaSimulator.demo(clock=clock)
    sim.order_types.add("SX")
    guard = ContractGuard(sim)
    client = make_client(guard, clock)
    types = client.list_sales_order_types()
    assert [t["orderType"] for t in types] == ["SI", "SO", "SX"]
    assert all(t["active"] is True for t in types)
    assert guard.violations == []
    assert [(e["method"], e["path"]) for e in sim.requests.entries][-1] == (
        "GET",
        "/v1/salesordertype",
    )
