# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Runs through the real engine of the core, with a small flow class written for the test.

The flow classes of the product (bbvisma.flows.FLOW_CLASSES) are tested by the core's pytest
suite; here the point is what the addon does around them: one log line per record, counts and
state on the run, the summary in the chatter, links and watermark, redaction, setup errors.
"""

import json
from unittest.mock import patch

from odoo import sql_db
from odoo.tests import tagged

import bbvisma.flows
from bbvisma.engine import Flow, SourceItem
from bbvisma.errors import AuthError, DataError, ServerError

from ..sync.sink import run_lock_key
from .common import SECRETS, ApicenterCase


class FakeClient:
    """Stands in for BBClient/VismaClient: the test flow below does not call them."""

    def __init__(self, system, **options):
        self.system = system
        self.options = options
        self.closed = False

    def close(self):
        self.closed = True


class ListFlow(Flow):
    """Reads ``ITEMS`` (key, modified, data); ``data`` says how each record should behave."""

    entity = "customer"
    ordered_source = True
    ITEMS = []

    def source_items(self, since):
        for key, modified, data in self.ITEMS:
            if since is None or modified >= since:
                yield SourceItem(key, modified, data, label=data.get("name", ""))

    def fetch_item(self, source_key):
        raise NotImplementedError

    def build(self, item, link):
        if item.data.get("park"):
            raise DataError("no VAT code for S 19", cause="unmapped:vat_codes:S19")
        return dict(item.data), {"name": item.data["name"]}

    def create(self, item, payload):  # pylint: disable=method-required-super
        if item.data.get("auth"):
            raise AuthError("Visma.net refused the token", system="visma", status=401)
        if item.data.get("fail"):
            raise ServerError("Visma.net answered 503", system="visma", status=503)
        return f"V-{item.key}", {"number": f"V-{item.key}", "echo": item.data.get("echo")}

    def update(self, item, payload, link):
        return {"updated": link.target_key}


@tagged("post_install", "-at_install")
class TestRun(ApicenterCase):
    def setUp(self):
        super().setUp()
        self.flow = self.make_flow()
        self.clients = []
        Integration = type(self.env["apicenter.integration"])

        def fake_client(integration, system, **options):
            client = FakeClient(system, **options)
            self.clients.append(client)
            return client

        self.startPatcher(patch.object(Integration, "_get_client", fake_client))
        self.startPatcher(
            patch.object(bbvisma.flows, "FLOW_CLASSES", {"customers": ListFlow}, create=True)
        )
        self.startPatcher(patch.object(ListFlow, "ITEMS", []))

    def _run(self, items, **kw):
        ListFlow.ITEMS[:] = items
        run = self.flow._run(**kw)
        self.env.invalidate_all()  # the run was written through the sink's own cursor
        return run

    def test_unavailable_flow_type_ends_failed_and_says_so(self):
        flow = self.make_flow(name="Prices", flow_type="prices")
        run = flow._run()
        self.env.invalidate_all()
        self.assertEqual(run.state, "failed")
        self.assertEqual(run.message, "flow type prices is not available in this version")
        self.assertIn("not available in this version", flow.message_ids[0].body)

    def test_run_logs_each_record_and_posts_its_summary_to_the_chatter(self):
        partner = self.env["res.partner"].create({"name": "Ops", "email": "ops@example.com"})
        self.integration.notify_partner_ids = partner
        run = self._run(
            [
                ("A", "2026-01-01 10:00:00", {"name": "Alpha"}),
                ("B", "2026-01-01 11:00:00", {"name": "Beta", "park": True}),
                ("C", "2026-01-01 12:00:00", {"name": "Gamma", "fail": True}),
            ]
        )
        self.assertEqual(run.state, "partial")
        self.assertEqual(
            (run.created_count, run.parked_count, run.failed_count, run.skipped_count), (1, 1, 1, 0)
        )
        self.assertTrue(run.date_end and run.duration >= 0)
        logs = run.log_ids.sorted("source_key")
        self.assertEqual(logs.mapped("action"), ["create", "park", "error"])
        self.assertEqual(logs[0].target_key, "V-A")
        self.assertEqual(logs[1].cause_key, "data:unmapped:vat_codes:S19")
        self.assertIn("503", logs[2].message)
        self.assertEqual(set(logs.flow_id.ids), {self.flow.id})
        summary = self.flow.message_ids[0]
        self.assertIn("1 created", summary.body)
        self.assertIn("1 parked", summary.body)
        self.assertEqual(summary.partner_ids, partner, "a partial run notifies the recipients")
        self.assertIn("1 created", run.message_ids[0].body)
        self.assertTrue(all(client.closed for client in self.clients))

    def test_second_run_skips_unchanged_records_from_the_watermark(self):
        items = [
            ("A", "2026-01-01 10:00:00", {"name": "Alpha"}),
            ("B", "2026-01-02 10:00:00", {"name": "Beta"}),
        ]
        first = self._run(items)
        self.assertEqual((first.state, first.created_count), ("done", 2))
        self.assertEqual(self.flow.watermark, "2026-01-02 10:00:00")
        links = self.env["apicenter.link"].search([("integration_id", "=", self.integration.id)])
        self.assertEqual(sorted(links.mapped("target_key")), ["V-A", "V-B"])
        second = self._run(items + [("A", "2026-01-03 10:00:00", {"name": "Alpha 2"})])
        # B is read again (reads are >= watermark) and skipped; A changed and is updated
        self.assertEqual(
            (second.created_count, second.updated_count, second.skipped_count), (0, 1, 1)
        )
        self.assertEqual(self.flow.watermark, "2026-01-03 10:00:00")
        self.assertIn("1 updated", self.flow.message_ids[0].body)
        self.assertFalse(self.flow.message_ids[0].partner_ids, "a clean run notifies nobody")

    def test_secrets_are_redacted_from_stored_payloads(self):
        run = self._run(
            [("A", "2026-01-01", {"name": "Alpha", "echo": f"key={SECRETS['bb_api_key']}"})]
        )
        log = run.log_ids
        self.assertIn("***", log.response_payload)
        for secret in SECRETS.values():
            for text in (log.response_payload, log.source_payload, log.request_payload):
                self.assertNotIn(secret, text or "")

    def test_payloads_are_stored_compact_and_shown_indented(self):
        run = self._run([("A", "2026-01-01", {"name": "Alpha", "lines": [{"sku": "S-1"}]})])
        log = run.log_ids
        self.assertEqual(json.loads(log.source_payload)["lines"], [{"sku": "S-1"}])
        self.assertNotIn("\n", log.source_payload, "one line: written by the C encoder")
        self.assertEqual(
            log.source_payload_display,
            json.dumps(json.loads(log.source_payload), ensure_ascii=False, indent=1),
        )
        self.assertIn('\n "name": "Alpha"', log.source_payload_display)
        log_form = self.env.ref("apicenter_bb_visma.apicenter_log_view_form").arch
        self.assertIn('name="source_payload_display"', log_form)
        self.assertNotIn('name="source_payload"', log_form)

    def test_authentication_error_aborts_the_run_and_pauses_the_integration(self):
        self.integration.action_activate()
        run = self._run(
            [
                ("A", "2026-01-01", {"name": "Alpha", "auth": True}),
                ("B", "2026-01-02", {"name": "Beta"}),
            ]
        )
        self.assertEqual(run.state, "failed")
        self.assertEqual(run.failed_count, 1, "the run stops at the first record")
        self.assertTrue(run.cause_key.startswith("auth:"))
        self.assertIn("refused the token", run.message)
        self.assertEqual(self.integration.state, "error")
        self.assertFalse(self.flow.cron_id.active)

    def test_dry_run_stores_no_link_and_no_watermark(self):
        run = self._run([("A", "2026-01-01", {"name": "Alpha"})], dry_run=True)
        self.assertTrue(run.dry_run)
        self.assertEqual(run.log_ids.action, "create")
        self.assertTrue(run.log_ids.dry_run)
        self.assertFalse(self.env["apicenter.link"].search([("source_key", "=", "A")]))
        self.assertFalse(self.flow.watermark)

    def test_an_exception_escaping_the_engine_fails_the_run_and_is_raised(self):
        class Broken(ListFlow):
            def __init__(self, ctx):
                raise RuntimeError("bug in the flow class")

        with patch.object(bbvisma.flows, "FLOW_CLASSES", {"customers": Broken}):
            try:
                self.flow._run()
            except RuntimeError as exc:
                self.assertEqual(str(exc), "bug in the flow class")
            else:
                self.fail("the exception must not be swallowed")
        self.env.invalidate_all()
        run = self.flow.last_run_id
        self.assertEqual(run.state, "failed")
        self.assertIn("bug in the flow class", run.message)

    def test_the_run_lock_is_released_when_the_run_ends(self):
        self._run([("A", "2026-01-01", {"name": "Alpha"})])
        key = run_lock_key(self.integration.id, "customers")
        # from a connection of its own, as another worker would try it
        with sql_db.db_connect(self.env.cr.dbname).cursor() as other:
            other.execute("SELECT pg_try_advisory_lock(%s)", [key])
            self.assertTrue(other.fetchone()[0])
            other.execute("SELECT pg_advisory_unlock(%s)", [key])

    def test_run_now_button_opens_the_run(self):
        action = self.flow.action_run_now()
        self.assertEqual(action["res_model"], "apicenter.run")
        self.assertEqual(self.env["apicenter.run"].browse(action["res_id"]).flow_id, self.flow)
