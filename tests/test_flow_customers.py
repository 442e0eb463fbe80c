"""Customers flow: BB debtors -> Visma.net customers, against both simulators in-process."""

from __future__ import annotations

import pytest
from flow_fixtures import ListSink, make_rig, over_loopback_http

from bbvisma.engine import Action
from bbvisma.flows import FLOW_CLASSES
from bbvisma.flows.customers import CustomersFlow, canonical_customer, classify
from bbvisma.flows.defaults import default_mapping, default_value_maps
from bbvisma.linkstore import MemoryLinkStore
from bbvisma.mapper import Mapping
from bbvisma.simulators.vismanet import default_seed as visma_default_seed


@pytest.fixture
def rig():
    rig = make_rig()
    yield rig
    assert rig.contract_violations() == []


def flow(rig, **settings) -> CustomersFlow:
    ctx = rig.context(
        mapping=default_mapping("customers"),
        value_maps=default_value_maps(),
        settings=settings,
        sink=settings.pop("sink", None),
    )
    return CustomersFlow(ctx)


def by_key(report):
    return {r.source_key: r for r in report.results}


def customer_posts(rig):
    return [e for e in rig.visma_writes() if e["method"] == "POST" and e["path"] == "/v1/customer"]


# -- company or person ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "contact", "vat_id", "company"),
    [
        ("Huber Bau GmbH", "Josef Huber", "ATU12345678", True),
        ("Metallbau Leipzig GmbH & Co. KG", None, None, True),
        ("MUSTER-KUNDE GMBH", None, None, True),
        ("Buyercompany ltd", None, None, True),
        ("Fjord Handel AS", None, None, True),
        ("Project services AB", None, None, True),
        ("My Customer Company S.A.", None, None, True),
        ("Ma jolie SARL", None, None, True),
        ("Holland Trade B.V.", None, None, True),
        ("Nordisk Design ApS", None, None, True),
        ("Bäckerei Kunz e.K.", None, None, True),
        ("Taxi-Gast AG Mitte", None, None, True),
        ("Widget Inc.", None, None, True),
        ("ODIN 59", "Dhr. J BLOKKER", None, True),  # a contact person besides the name
        ("Kunde 1", None, "DE987654321", True),  # a VAT id
        ("Anna Schmidt", None, None, False),
        ("Claire Dubois", None, None, False),
        ("Asmussen, Agnes", None, None, False),  # "As"/"Ag" in a name are no legal forms
        ("Franz Müller", "Franz Müller", None, False),  # the contact is the person
    ],
)
def test_company_or_person_is_read_from_the_data(name, contact, vat_id, company):
    is_company, reason = classify(name, contact, vat_id)
    assert is_company is company, reason


def test_company_rule_setting_overrides_the_data():
    assert classify("Anna Schmidt", None, None, "company")[0] is True
    assert classify("Huber Bau GmbH", "Josef Huber", None, "person")[0] is False


def test_seed_debtors_become_company_and_person_customers(rig):
    report = flow(rig).run()
    customers = rig.visma_sim.customers
    huber = customers["10025"]  # Huber Bau GmbH, contact Josef Huber
    assert huber["name"] == "Huber Bau GmbH"
    assert huber["mainContact"]["name"] == "Josef Huber"
    assert huber["mainContact"]["attention"] == "Josef Huber"
    assert huber["customerClass"]["id"] == "EU" and huber["mainAddress"]["country"]["id"] == "AT"
    anna = customers["10024"]  # a person: her own main contact
    assert anna["mainContact"]["name"] == "Anna Schmidt" and "attention" not in anna["mainContact"]
    assert anna["mainContact"]["email"] == "anna.schmidt@example.de"
    assert anna["customerClass"]["id"] == "INLAND" and anna["creditTerms"]["id"] == "14"
    fjord = customers["10027"]  # Norway: third country, its currency
    assert fjord["customerClass"]["id"] == "DRITT" and fjord["currencyId"] == "NOK"
    results = by_key(report)
    assert results["10024"].source["kind"] == "person"
    assert results["10025"].source["company_reason"] == "legal form 'GmbH' in the name"


def test_company_rule_person_makes_every_debtor_its_own_contact(rig):
    flow(rig, company_rule="person").run()
    huber = rig.visma_sim.customers["10025"]
    assert huber["mainContact"]["name"] == "Huber Bau GmbH"
    assert "attention" not in huber["mainContact"]


def test_german_country_name_is_mapped_and_unknown_one_parks_naming_it(rig):
    rig.bb_sim.modify_debtor(rig.api_key, "10028", country="Dänemark")
    rig.bb_sim.modify_debtor(rig.api_key, "10026", country="Atlantis")
    results = by_key(flow(rig).run())
    assert rig.visma_sim.customers["10028"]["mainAddress"]["country"]["id"] == "DK"
    parked = results["10026"]
    assert parked.action is Action.PARK
    assert parked.cause_key == "data:unmapped:countries:Atlantis"
    assert "Atlantis" in parked.message
    assert "10026" not in rig.visma_sim.customers


# -- idempotency ------------------------------------------------------------------------------
def test_first_run_creates_and_second_run_makes_zero_write_calls(rig):
    first = flow(rig).run()
    assert first.counts["create"] == 28 and len(customer_posts(rig)) == 30
    rig.clear_logs()
    second = flow(rig).run()
    assert second.counts["skip"] == 28
    # the two debtors Visma.net refused (countries AF, HR) are not sent again unchanged
    assert second.counts["park"] == 2
    assert rig.visma_writes() == []
    assert rig.visma_requests() == []  # not even a read


def test_changed_debtor_gives_exactly_one_update(rig):
    flow(rig).run()
    rig.bb_sim.modify_debtor(rig.api_key, "10024", city="Potsdam", zip="14467")
    rig.clear_logs()
    report = flow(rig).run()
    assert report.counts["update"] == 1 and by_key(report)["10024"].action is Action.UPDATE
    writes = rig.visma_writes()
    assert [(w["method"], w["path"]) for w in writes] == [("PUT", "/v1/customer/10024")]
    assert rig.visma_sim.customers["10024"]["mainAddress"]["city"] == "Potsdam"


def test_refused_debtor_is_sent_again_after_a_change_or_on_replay(rig):
    flow(rig).run()
    rig.visma_sim.countries["HR"] = "Kroatien"  # the tenant learns the country
    rig.clear_logs()
    assert by_key(flow(rig).run())["10015"].action is Action.PARK  # unchanged: not resent
    assert rig.visma_writes() == []
    replay = flow(rig).replay(["10015"])
    assert replay.counts["create"] == 1
    assert rig.visma_sim.customers["10015"]["mainAddress"]["country"]["id"] == "HR"


def test_lost_create_answer_leaves_no_duplicate(rig):
    rig.visma_sim.faults.add("drop_after_commit", method="POST", path="^/v1/customer$")
    report = flow(rig).run()
    first = report.results[0]
    assert first.action is Action.CREATE and first.response.get("recovered") is True
    names = [c["name"] for c in rig.visma_sim.customers.values()]
    assert len(names) == len(set(names)) == 29  # 28 debtors + the seed's walk-in customer


def test_lost_links_lead_to_no_duplicate(rig):
    flow(rig).run()
    before = len(rig.visma_sim.customers)
    rig.links = MemoryLinkStore()  # the link table is gone (restored backup, new install)
    rig.clear_logs()
    report = flow(rig).run()
    assert customer_posts(rig) == [] or all(
        e["status"] == 400 for e in customer_posts(rig)
    )  # only the two refused countries are tried again
    assert len(rig.visma_sim.customers) == before
    adopted = [r for r in report.results if (r.response or {}).get("adopted")]
    assert len(adopted) == 28


def test_run_killed_in_the_middle_then_run_again_creates_no_duplicate(rig):
    with pytest.raises(KeyboardInterrupt):
        flow(rig, sink=ListSink(fail_after=7)).run()
    assert len(rig.visma_sim.customers) == 1 + 7
    report = flow(rig).run()
    assert report.counts["skip"] == 7 and report.counts["create"] == 21
    assert len(rig.visma_sim.customers) == 29


# -- matching existing customers ----------------------------------------------------------------
def _visma_seed_with(*customers):
    seed = visma_default_seed()
    seed.get("vismanet", seed)["customers"].extend(customers)
    return seed


def test_email_match_adopts_an_existing_visma_customer_without_create():
    existing = {
        "number": "K900",
        "name": "Schmidt, Anna",
        "customerClassId": "INLAND",
        "mainContact": {"name": "Anna Schmidt", "email": "Anna.Schmidt@example.de"},
    }
    rig = make_rig(visma_seed=_visma_seed_with(existing))
    results = by_key(flow(rig).run())
    anna = results["10024"]
    assert anna.action is Action.CREATE and anna.target_key == "K900"
    assert anna.response == {
        "number": "K900",
        "adopted": True,
        "matched_by": "email",
        "updated": True,
    }
    assert "10024" not in rig.visma_sim.customers
    assert rig.visma_sim.customers["K900"]["name"] == "Anna Schmidt"  # updated from BB
    assert rig.links.get("customer", "10024").target_key == "K900"
    assert rig.contract_violations() == []


def test_email_match_without_update_keeps_the_visma_customer_as_it_is():
    existing = {
        "number": "K900",
        "name": "Schmidt, Anna",
        "mainContact": {"email": "anna.schmidt@example.de"},
    }
    rig = make_rig(visma_seed=_visma_seed_with(existing))
    flow(rig, update_on_match=False).run()
    assert rig.visma_sim.customers["K900"]["name"] == "Schmidt, Anna"
    assert not [w for w in rig.visma_writes() if w["path"] == "/v1/customer/K900"]


def test_debtors_sharing_an_email_stay_separate_customers(rig):
    flow(rig).run()  # 10002, 10011 and 10013 all have buyer@info.de
    customers = rig.visma_sim.customers
    assert {customers[n]["name"] for n in ("10002", "10011", "10013")} == {
        "DB Station&Service AG RB Mitte",
        "Kunde 1",
        "Beispielkunde",
    }


def test_two_unlinked_visma_customers_with_the_email_park_the_debtor():
    twins = [
        {
            "number": f"K90{i}",
            "name": f"Anna {i}",
            "mainContact": {"email": "anna.schmidt@example.de"},
        }
        for i in (1, 2)
    ]
    rig = make_rig(visma_seed=_visma_seed_with(*twins))
    parked = by_key(flow(rig).run())["10024"]
    assert parked.action is Action.PARK
    assert parked.cause_key == "data:ambiguous_email:anna.schmidt@example.de"
    assert "K901" in parked.message and "K902" in parked.message


def test_customer_number_held_by_a_stranger_parks_instead_of_overwriting():
    stranger = {"number": "10024", "name": "Somebody Else", "mainContact": {"name": "X"}}
    rig = make_rig(visma_seed=_visma_seed_with(stranger))
    parked = by_key(flow(rig, match_by_email=False).run())["10024"]
    assert parked.action is Action.PARK and parked.cause_key == "data:number_taken:10024"
    assert rig.visma_sim.customers["10024"]["name"] == "Somebody Else"


def test_dry_run_writes_nothing_and_shows_the_payloads(rig):
    report = CustomersFlow(
        rig.context(
            mapping=default_mapping("customers"), value_maps=default_value_maps(), dry_run=True
        )
    ).run()
    assert report.counts["create"] == 30 and rig.visma_writes() == []
    anna = by_key(report)["10024"].payload
    assert anna["number"] == "10024" and anna["mainContact"]["email"] == "anna.schmidt@example.de"
    assert len(rig.links) == 0


def test_canonical_customer_normalises_the_vat_id():
    source = canonical_customer(
        {"name": "LE CLIENT", "sales_tax_id": "FR 05 987 654 321", "country": "fr"}, "10008"
    )
    assert source["vat_id"] == "FR05987654321" and source["address"]["country_code"] == "FR"


def test_flow_is_registered_for_the_addon():
    assert FLOW_CLASSES["customers"] is CustomersFlow


# -- end to end over real loopback HTTP ---------------------------------------------------------
def test_customers_end_to_end_over_loopback_http():
    rig = make_rig()
    with over_loopback_http(rig):
        first = flow(rig).run()
        second = flow(rig).run()
    assert first.counts["create"] == 28 and second.counts["skip"] == 28
    assert len(rig.visma_sim.customers) == 29
    assert rig.contract_violations() == []


# -- API calls per record -----------------------------------------------------------------------
def _visma_api_requests(rig):
    return [e for e in rig.visma_requests() if not e["path"].startswith("/connect")]


def test_a_bulk_first_run_reads_the_customer_list_once_instead_of_looking_up_each_debtor(rig):
    """30 new debtors in one batch: one page of the customer list, then one POST each (the
    e-mail and number lookups are answered by the run's index). Only a hit costs a call:
    the seed's three debtors sharing buyer@info.de -- the 2nd and 3rd find the e-mail taken
    in the index, and the live lookup confirms by whom (customers of this run, linked)."""
    emails = []
    original = rig.visma.find_customers_by_email

    def find_customers_by_email(email):
        emails.append(email)
        return original(email)

    rig.visma.find_customers_by_email = find_customers_by_email
    report = flow(rig).run()
    requests = _visma_api_requests(rig)
    reads = [r for r in requests if r["method"] == "GET"]
    assert [r["path"] for r in reads] == ["/v1/customer"] * 3
    assert emails == ["buyer@info.de", "buyer@info.de"]
    created = report.counts["create"]
    # the adopted-and-updated and refused debtors are the only writes besides the creates
    assert len(customer_posts(rig)) == 30 and created == 28
    # every call accounted for: the list page, the writes, the two confirmations
    assert len(requests) == len(customer_posts(rig)) + 1 + len(emails)


def test_a_small_batch_looks_each_new_debtor_up_instead_of_reading_every_customer(rig):
    """A few new debtors (below the index threshold) cost lookups, not a full list read."""
    ctx = rig.context(
        mapping=default_mapping("customers"),
        value_maps=default_value_maps(),
        batch_size=CustomersFlow.INDEX_THRESHOLD - 1,
    )
    report = CustomersFlow(ctx).run()
    assert report.counts["create"] == 28
    lookups = [r for r in _visma_api_requests(rig) if r["method"] == "GET"]
    # per-debtor lookups (by e-mail, by number): at least one per created customer, where the
    # index would have read one page
    assert len(lookups) >= 28


# -- how a created customer's link is stored ---------------------------------------------------
class DurabilityLog(MemoryLinkStore):
    def __init__(self):
        super().__init__()
        self.durable: dict[str, bool] = {}

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True):
        self.durable[source_key] = durable
        return super().put(entity, source_key, target_key, content_hash, meta)


def test_only_customers_no_lookup_could_find_again_get_a_durable_link(rig):
    full = default_mapping("customers")
    # without the number rule Visma.net numbers the customers
    mapping = Mapping(full.name, [rule for rule in full.rules if rule.target != "number"])
    rig.links = store = DurabilityLog()
    ctx = rig.context(mapping=mapping, value_maps=default_value_maps(), settings={})
    report = CustomersFlow(ctx).run()
    created = {r.source_key: r for r in report.results if r.action is Action.CREATE}
    assert {"10001", "10003", "10006"} <= set(created)
    for key in created:
        payload = created[key].payload
        findable = bool(payload.get("corporateId") or created[key].source.get("email"))
        assert store.durable[key] is (not findable), key
    assert any(store.durable.values()) and not all(store.durable.values())
