# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The fault suite through the Odoo module: the real flows, run by ``apicenter.flow._run``
(OdooRunSink on its own cursor, OdooLinkStore), against both simulators in-process.

The pure fault suite (``tests/test_fault_suite.py`` of the core) covers every fault on the
engine; here the faults whose outcome depends on the Odoo layer -- what is committed when,
and what a rerun finds -- are replayed through it:

* a connection dropped after Visma.net committed a create: no duplicate, the run recovers;
* a worker killed in the middle of a batch (a BaseException out of the sink, its cursor lost
  with everything not yet committed): the rerun creates the rest, nothing twice;
* wrong credentials mid-run: the run fails with the auth cause, the integration pauses, and
  after the fix the next run completes without duplicates.

After each: Visma.net holds every BuchhaltungsButler debtor exactly once, the link table points
at existing customers, and the activity log says what happened.
"""

from collections import Counter
from unittest.mock import patch

from odoo.tests import tagged

from bbvisma.simulators.buchhaltungsbutler import BBSimulator
from bbvisma.simulators.buchhaltungsbutler import default_seed as bb_default_seed
from bbvisma.simulators.common import FakeClock, sim_http_client
from bbvisma.simulators.vismanet import VismaSimulator
from bbvisma.simulators.vismanet import default_seed as visma_default_seed

from ..sync.sink import OdooRunSink
from .common import ApicenterCase, kill_run_after

BB_BASE = "http://127.0.0.1:8071/api/v1"
VISMA_BASE = "http://127.0.0.1:8072"


class SimulatorsMixin:
    """Both simulators in-process, seeded with the integration's own credentials; the
    integration's ``_get_client`` builds the real clients of the core on them (the only change:
    an in-process ``http_client`` and the simulators' FakeClock for pacing and back-off)."""

    def setup_simulators(
        self,
        *,
        debtors=12,
        receipts=None,
        api_client="bb-client-Tq48",
        api_secret=None,
        api_key=None,
        client_id="visma-client-Rz19",
        client_secret=None,
    ):
        """``debtors`` plain debtors (unique names and e-mails, so every one must sync) replace
        the seed's, whose edge cases (shared e-mails, unknown countries) park on purpose;
        ``receipts`` keeps only the seed's first receipts (their files are real samples)."""
        integration = self.integration.sudo()
        api_secret = api_secret or integration.bb_api_secret
        api_key = api_key or integration.bb_api_key
        client_secret = client_secret or integration.visma_client_secret
        self.clock = FakeClock()
        bb_seed = bb_default_seed()
        bb_seed["api_clients"] = [{"api_client": api_client, "api_secret": api_secret}]
        company = bb_seed["companies"][0]
        company["api_key"] = api_key
        company["debtors"] = [
            {
                "postingaccount_number": str(20001 + n),
                "name": f"Testkunde {n + 1} GmbH",
                "contact_person_name": f"Erika Muster {n + 1}",
                "street": f"Hauptstraße {n + 1}",
                "zip": "10115",
                "city": "Berlin",
                "country": "DE",
                "email": f"einkauf{n + 1}@testkunde{n + 1}.example.de",
            }
            for n in range(debtors)
        ]
        if receipts is not None:
            company["receipts"] = company["receipts"][:receipts]
        self.bb_sim = BBSimulator(clock=self.clock, quota_per_minute=None)
        self.bb_sim.load_seed(bb_seed)
        visma_seed = visma_default_seed()
        section = visma_seed.get("vismanet", visma_seed)
        section["credentials"]["clients"][0].update(
            client_id=client_id, client_secret=client_secret
        )
        tenant = section["credentials"]["tenants"][0]
        self.visma_sim = VismaSimulator(clock=self.clock)
        self.visma_sim.load_seed(visma_seed)
        integration.write(
            {
                "bb_base_url": BB_BASE,
                "bb_api_client": api_client,
                "bb_api_secret": api_secret,
                "bb_api_key": api_key,
                "visma_base_url": VISMA_BASE,
                "visma_token_url": VISMA_BASE + "/connect/token",
                "visma_client_id": client_id,
                "visma_client_secret": client_secret,
                "visma_tenant_id": tenant["tenant_id"],
                "visma_company_id": tenant["companies"][0],
            }
        )
        self.visma_client_secret = client_secret
        Integration = type(self.env["apicenter.integration"])
        original = Integration._get_client
        sims = {"bb": (self.bb_sim, BB_BASE), "visma": (self.visma_sim, VISMA_BASE)}
        clock = self.clock

        def wired(integration, system, **options):
            sim, base = sims[system]
            options.setdefault("http_client", sim_http_client(sim, base))
            options.setdefault("sleep", clock.sleep)
            options.setdefault("clock", clock.monotonic)
            return original(integration, system, **options)

        self.startPatcher(patch.object(Integration, "_get_client", wired))

    # -- what the simulators hold -------------------------------------------------------------
    def debtor_names(self):
        company = next(iter(self.bb_sim.companies.values()))
        return {number: d["name"] for number, d in company.debtors.items()}

    def customers_by_name(self):
        return Counter(c.get("name") for c in self.visma_sim.customers.values())

    def assert_every_debtor_once_in_visma(self):
        names = self.debtor_names()
        counted = self.customers_by_name()
        doubled = {n: c for n, c in counted.items() if n in names.values() and c > 1}
        missing = [k for k, n in names.items() if not counted.get(n)]
        self.assertEqual(doubled, {}, "duplicate customers in Visma.net")
        self.assertEqual(missing, [], "debtors not in Visma.net")

    def links(self, entity="customer"):
        return self.env["apicenter.link"].search(
            [("integration_id", "=", self.integration.id), ("entity", "=", entity)]
        )

    def run_flow(self, flow):
        run = flow._run()
        self.env.invalidate_all()  # the run was written through the sink's own cursor
        return run


@tagged("post_install", "-at_install")
class TestFaultSuiteThroughOdoo(SimulatorsMixin, ApicenterCase):
    def setUp(self):
        super().setUp()
        self.setup_simulators(receipts=16)
        self.flow = self.make_flow(name="Customers", flow_type="customers", batch_size=5)
        self.count = len(self.debtor_names())

    def test_connection_dropped_after_commit_leaves_no_duplicate(self):
        self.visma_sim.faults.add(
            "drop_after_commit", path=r"^/v1/customer$", method="POST", after=2, times=2
        )
        run = self.run_flow(self.flow)
        self.assertEqual(run.state, "done", run.message)
        self.assertEqual(run.created_count, self.count)
        self.assert_every_debtor_once_in_visma()
        links = self.links()
        self.assertEqual(len(links), self.count)
        self.assertTrue(all(link.target_key in self.visma_sim.customers for link in links))
        # the log tells it: two creates whose answer was lost, recovered by lookup
        recovered = run.log_ids.filtered(
            lambda log: '"recovered": true' in (log.response_payload or "")
        )
        self.assertEqual(len(recovered), 2)
        second = self.run_flow(self.flow)
        self.assertEqual((second.skipped_count, second.created_count), (self.count, 0))

    def test_worker_killed_mid_batch_then_rerun_completes_without_duplicates(self):
        killed = kill_run_after(7, self.flow._run)
        self.assertIsNotNone(killed, "the worker was killed")
        self.env.invalidate_all()
        killed = self.flow.last_run_id
        self.assertNotEqual(killed.state, "done", "a killed run must not look successful")
        created_before = len(self.visma_sim.customers) - 1  # the seed's walk-in customer
        self.assertEqual(created_before, 7)
        self.assertEqual(len(self.links()), 7, "each create's link was committed at once")
        rerun = self.run_flow(self.flow)
        self.assertEqual(rerun.state, "done", rerun.message)
        self.assertEqual((rerun.created_count, rerun.skipped_count), (self.count - 7, 7))
        self.assert_every_debtor_once_in_visma()
        self.assertEqual(len(self.links()), self.count)
        # the killed run does not stay "running" for ever: the next run closed it, truthfully
        killed.invalidate_recordset()
        self.assertEqual(killed.state, "failed")
        self.assertEqual(killed.cause_key, "run:interrupted")
        self.assertIn("stopped before it ended", killed.message)
        self.assertTrue(killed.date_end)
        bodies = self.flow.message_ids.mapped("body")
        self.assertTrue(any("stopped before it ended" in body for body in bodies), "chatter")

    def test_wrong_credentials_mid_run_fail_the_run_then_the_fixed_setup_resumes(self):
        self.integration.action_activate()
        state = {"records": 0}
        original = OdooRunSink.record
        sim = self.visma_sim
        client_id = self.integration.sudo().visma_client_id

        def record(sink, result):
            original(sink, result)
            state["records"] += 1
            if state["records"] == 5:  # an admin rotates the secret in Visma.net
                sim.clients[client_id]["client_secret"] = "rotated-in-visma"
                for token in sim.tokens.values():
                    token["expires_at"] = 0.0

        with patch.object(OdooRunSink, "record", record):
            run = self.run_flow(self.flow)
        self.assertEqual(run.state, "failed")
        self.assertTrue(run.cause_key.startswith("auth:"), run.cause_key)
        self.assertEqual((run.created_count, run.failed_count), (5, 1))
        self.assertEqual(self.integration.state, "error", "the schedule is paused")
        self.assertFalse(self.flow.cron_id.active)
        error_log = run.log_ids.filtered(lambda log: log.action == "error")
        self.assertIn("client secret", error_log.message)
        # the manager enters the new secret and activates the integration again
        self.integration.write({"visma_client_secret": "rotated-in-visma"})
        self.integration.action_activate()
        rerun = self.run_flow(self.flow)
        self.assertEqual(rerun.state, "done", rerun.message)
        self.assertEqual((rerun.created_count, rerun.skipped_count), (self.count - 5, 5))
        self.assert_every_debtor_once_in_visma()

    def test_orders_connection_dropped_after_invoice_commit_leaves_no_duplicate_invoice(self):
        flow = self.make_flow(
            name="Orders", flow_type="orders", batch_size=10, missing_sku_policy="create"
        )
        self.visma_sim.faults.add(
            "drop_after_commit", path=r"^/v2/customerinvoice$", method="POST", after=1, times=2
        )
        first = self.run_flow(flow)
        self.assertEqual(first.failed_count, 0, first.message)
        second = self.run_flow(flow)
        self.assertEqual((second.created_count, second.failed_count), (0, 0))
        documents = [*self.visma_sim.invoices.values(), *self.visma_sim.credit_notes.values()]
        references = Counter(d.get("externalReference") for d in documents)
        self.assertEqual({r: n for r, n in references.items() if n > 1}, {}, "duplicates")
        recovered = first.log_ids.filtered(
            lambda log: '"recovered": true' in (log.response_payload or "")
        )
        self.assertEqual(len(recovered), 2, "both lost answers were recovered by lookup")
        # every outgoing receipt is in Visma.net or parked with its cause, and the log says so
        company = next(iter(self.bb_sim.companies.values()))
        outgoing = [
            str(key)
            for key, receipt in company.receipts.items()
            if receipt.get("type") in ("invoice outbound", "credit outbound")
            and not receipt.get("deleted")
        ]
        logs = first.log_ids
        for key in outgoing:
            line = logs.filtered(lambda log, key=key: log.source_key == key)
            self.assertEqual(len(line), 1, f"receipt {key}: one log line")
            if f"BB-{key}" in references:
                self.assertEqual(line.action, "create", f"receipt {key}")
                self.assertTrue(line.target_key)
            else:
                self.assertEqual(line.action, "park", f"receipt {key}: {line.message}")
                self.assertTrue(line.cause_key and line.message)
