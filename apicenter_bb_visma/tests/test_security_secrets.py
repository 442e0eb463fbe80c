# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Credentials through the Odoo layer: an Integration User never gets them, and no run ever
writes them anywhere.

* The ORM and its RPC surface (``odoo.service.model.call_kw``, what JSON-RPC/XML-RPC
  execute): read, search_read, web_read, web_search_read, export_data, search by a secret
  (guessing it through a domain), grouping by it, private helpers -- each refused to the
  Integration User; ``fields_get`` does not list the credential fields for them.
* A full sync (customers, products, orders: the real flows, both simulators in-process, seeded
  with distinctive credentials) with faults on the way: every log record at DEBUG level, the
  activity log, the runs, the links, the chatter, the tracking values -- all text of those
  tables, read with SQL -- contain none of the credentials nor the bearer tokens issued.
* URLs on the integration form: https only, plain http for loopback (the simulators) only.
* TLS: no field turns verification off, and the client builder refuses ``verify=False``.
"""

import base64
import logging
from unittest.mock import patch

from odoo.exceptions import AccessError, ValidationError
from odoo.service.model import call_kw
from odoo.tests import tagged

from bbvisma.errors import ConfigError

from .common import USER, ApicenterCase
from .test_fault_suite_odoo import SimulatorsMixin

CREDENTIALS = (
    "bb_api_client",
    "bb_api_secret",
    "bb_api_key",
    "visma_client_id",
    "visma_client_secret",
    "visma_tenant_id",
)
DISTINCT = {
    "bb_api_secret": "bb-secret-Ux73dWq9",
    "bb_api_key": "bb-key-Np28sLv4",
    "visma_client_secret": "visma-secret-Ke61bZr3",
}


@tagged("post_install", "-at_install")
class TestCredentialsThroughTheOrm(ApicenterCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # with the export right, what refuses an export is the field's own access rule
        cls.user.group_ids = [(4, cls.env.ref("base.group_allow_export").id)]

    def _as_user(self):
        return self.env["apicenter.integration"].with_user(self.user)

    def _rpc(self, method, args, kwargs=None):
        """As JSON-RPC/XML-RPC ``execute_kw`` would call it for the Integration User."""
        return call_kw(self._as_user(), method, args, kwargs or {})

    def test_rpc_read_and_search_read_of_a_credential_are_refused(self):
        ids = [self.integration.id]
        for field_name in CREDENTIALS:
            with self.subTest(field=field_name):
                with self.assertRaises(AccessError):
                    self._rpc("read", [ids, [field_name]])
                with self.assertRaises(AccessError):
                    self._rpc("search_read", [[]], {"fields": ["name", field_name]})
                with self.assertRaises(AccessError):
                    self._rpc("web_read", [ids], {"specification": {field_name: {}}})
                with self.assertRaises(AccessError):
                    self._rpc(
                        "web_search_read",
                        [[]],
                        {"specification": {"name": {}, field_name: {}}},
                    )

    def test_reading_all_fields_returns_no_credential(self):
        [values] = self._rpc("read", [[self.integration.id]])
        self.assertFalse(set(CREDENTIALS) & set(values))
        self.assertFalse(set(DISTINCT.values()) & {str(v) for v in values.values()})
        self.assertEqual(values["name"], "Test integration")

    def test_export_of_a_credential_is_refused(self):
        for field_name in CREDENTIALS:
            with self.subTest(field=field_name), self.assertRaises(AccessError):
                self._rpc("export_data", [[self.integration.id], ["name", field_name]])

    def test_a_credential_cannot_be_guessed_through_a_search_domain_or_grouping(self):
        secret = self.integration.sudo().bb_api_secret
        with self.assertRaises(AccessError):
            self._rpc("search", [[("bb_api_secret", "=", secret)]])
        with self.assertRaises(AccessError):
            self._rpc("search_count", [[("bb_api_secret", "like", secret[:4])]])
        with self.assertRaises(AccessError):
            self._rpc("formatted_read_group", [[]], {"groupby": ["bb_api_key"]})

    def test_fields_get_does_not_list_credentials_for_the_integration_user(self):
        fields = self._rpc("fields_get", [], {"attributes": ["string", "readonly"]})
        self.assertFalse(set(CREDENTIALS) & set(fields))
        self.assertIn("name", fields)
        # the manager sees them (and may edit them)
        manager_fields = self.env["apicenter.integration"].with_user(self.manager).fields_get()
        self.assertTrue(set(CREDENTIALS) <= set(manager_fields))

    def test_private_helpers_that_hold_credentials_cannot_be_called_remotely(self):
        for method in ("_client_kwargs", "_get_client", "_redactor", "_redact_payload"):
            with self.subTest(method=method), self.assertRaises(AccessError):
                self._rpc(method, [[self.integration.id], "bb"])

    def test_the_attribute_itself_is_refused_to_the_integration_user(self):
        integration = self._as_user().browse(self.integration.id)
        for field_name in CREDENTIALS:
            with self.subTest(field=field_name), self.assertRaises(AccessError):
                integration.__getitem__(field_name)  # the read is the test

    def test_copy_data_of_the_integration_carries_no_credential(self):
        # duplicating is a manager's action; what it would copy must hold no secret either
        data = self.integration.with_user(self.manager).copy_data()[0]
        for field_name in DISTINCT:
            self.assertFalse(data.get(field_name), field_name)


@tagged("post_install", "-at_install")
class TestUrlsAndTls(ApicenterCase):
    def test_plain_http_to_a_remote_host_is_refused_on_the_form(self):
        for field_name in ("bb_base_url", "visma_base_url", "visma_token_url"):
            for url in ("http://api.finance.visma.net", "http://10.1.2.3:8069/api", "ftp://x.de"):
                with self.subTest(field=field_name, url=url), self.assertRaises(ValidationError):
                    self.integration.with_user(self.manager).write({field_name: url})

    def test_https_and_loopback_urls_are_accepted(self):
        for url in (
            "https://api.finance.visma.net",
            "http://127.0.0.1:8072",
            "http://localhost:8072",
        ):
            with self.subTest(url=url):
                self.integration.with_user(self.manager).write({"visma_base_url": url})
                self.assertEqual(self.integration.visma_base_url, url)

    def test_no_field_turns_tls_verification_off_and_the_client_builder_refuses_it(self):
        names = " ".join(self.env["apicenter.integration"].fields_get()).lower()
        for word in ("verify", "ssl", "tls", "insecure", "certificate"):
            self.assertNotIn(word, names)
        self.assertNotIn("verify", self.integration._client_kwargs("bb"))
        self.assertNotIn("verify", self.integration._client_kwargs("visma"))
        for system in ("bb", "visma"):
            with self.subTest(system=system), self.assertRaises(ConfigError):
                self.integration._get_client(system, verify=False)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


#: loggers raised to DEBUG while the sync runs: the core, the addon, the HTTP client, and
#: Odoo's own modules at INFO. Not odoo.sql_db: its DEBUG output (--log-sql) prints the
#: parameters of every query, including a manager saving a credential -- a switch that must
#: never be on in production, and that no code of this module controls.
DEBUG_LOGGERS = ("bbvisma", "odoo.addons.apicenter_bb_visma", "httpx", "httpcore")


@tagged("post_install", "-at_install")
class TestNoSecretInLogsPayloadsOrChatter(SimulatorsMixin, ApicenterCase):
    """A full sync with distinctive credentials, then a grep of everything it left behind."""

    def setUp(self):
        super().setUp()
        self.integration.sudo().write(DISTINCT)
        self.setup_simulators(debtors=6, receipts=8)
        self.capture = _Capture()
        root = logging.getLogger()
        root.addHandler(self.capture)
        self.addCleanup(root.removeHandler, self.capture)
        for name in DEBUG_LOGGERS:
            logger = logging.getLogger(name)
            self.addCleanup(logger.setLevel, logger.level)
            logger.setLevel(logging.DEBUG)

    def _forbidden(self):
        integration = self.integration.sudo()
        values = [integration[name] for name in DISTINCT]
        basic = f"{integration.bb_api_client}:{integration.bb_api_secret}".encode()
        values.append(base64.b64encode(basic).decode())
        values += list(self.visma_sim.tokens)
        return [v for v in values if v]

    def _sync_everything_with_faults(self):
        self.visma_sim.faults.add(
            "status", path=r"^/v1/customer$", method="GET", times=1, status=401
        )
        self.visma_sim.faults.add(
            "status",
            path=r"^/v1/inventory",
            after=2,
            times=1,
            status=500,
            body={"ExceptionMessage": f"rejected {DISTINCT['visma_client_secret']}"},
        )
        self.visma_sim.faults.add("drop_after_commit", path=r"^/v2/customerinvoice$", times=1)
        self.bb_sim.faults.add(
            "status",
            path=r"/receipts/get/\d+$",
            times=1,
            status=500,
            body={"success": False, "error_code": 0, "message": f"{DISTINCT['bb_api_key']} busy"},
        )
        runs = self.env["apicenter.run"]
        for flow_type in ("customers", "products", "orders"):
            flow = self.make_flow(
                name=flow_type.title(), flow_type=flow_type, missing_sku_policy="create"
            )
            runs |= self.run_flow(flow)
            runs |= self.run_flow(flow)  # a second run: skips, and the retried failures
        # and a connection test with a secret the server refuses, shown to the user
        self.integration.sudo().write({"visma_client_secret": "changed-Wq82xNb5"})
        with self.assertRaises(Exception) as refused:
            self.integration.with_user(self.manager).action_test_visma_connection()
        self.integration.sudo().write({"visma_client_secret": DISTINCT["visma_client_secret"]})
        return runs, str(refused.exception)

    def _all_text(self, tables):
        """Every text-like column of every row of ``tables``, read with SQL."""
        cr = self.env.cr
        self.env.flush_all()
        chunks = []
        for table in tables:
            cr.execute(
                """
                SELECT column_name FROM information_schema.columns
                 WHERE table_name = %s
                   AND data_type IN ('character varying', 'text', 'jsonb', 'json')
                """,
                [table],
            )
            columns = [row[0] for row in cr.fetchall()]
            for column in columns:
                cr.execute(f'SELECT "{column}"::text FROM "{table}"')  # noqa: S608 - own names
                chunks += [row[0] for row in cr.fetchall() if row[0]]
        return "\n".join(chunks)

    def test_a_full_sync_with_faults_leaves_no_credential_anywhere(self):
        runs, refused = self._sync_everything_with_faults()
        self.assertTrue(runs.log_ids, "the runs logged their records")
        self.assertGreaterEqual(sum(runs.mapped("created_count")), 10, "the sync really ran")
        forbidden = self._forbidden()
        self.assertTrue(self.visma_sim.tokens, "tokens were issued")
        database = self._all_text(
            [
                "apicenter_log",
                "apicenter_run",
                "apicenter_link",
                "mail_message",
                "mail_tracking_value",
                "ir_logging",
            ]
        )
        logged = "\n".join(self.capture.lines)
        self.assertIn("***", database, "redaction happened (the control)")
        for secret in forbidden:
            self.assertNotIn(secret, database)
            self.assertNotIn(secret, logged)
            self.assertNotIn(secret, refused)
        self.assertIn("failed", refused)

    def test_the_integration_user_reads_the_activity_log_without_any_credential(self):
        runs, _refused = self._sync_everything_with_faults()
        self.user.group_ids = [(4, self.env.ref("base.group_allow_export").id)]
        user_env = self.env(user=self.user)
        logs = user_env["apicenter.log"].search([("run_id", "in", runs.ids)])
        self.assertEqual(len(logs), len(runs.log_ids))
        exported = logs.export_data(
            [
                "source_key",
                "target_key",
                "action",
                "message",
                "source_payload",
                "request_payload",
                "response_payload",
                "exchanges",
            ]
        )["datas"]
        read = user_env["apicenter.run"].search_read(
            [("id", "in", runs.ids)], ["name", "message", "cause_key"]
        )
        chatter = user_env["mail.message"].search_read(
            [("model", "in", ["apicenter.run", "apicenter.flow"]), ("res_id", "!=", False)],
            ["body"],
        )
        text = repr(exported) + repr(read) + repr(chatter)
        self.assertIn("create", text)
        for secret in self._forbidden():
            self.assertNotIn(secret, text)


@tagged("post_install", "-at_install")
class TestIntegrationUserStartingRuns(ApicenterCase):
    """The Integration User sees runs and logs; starting a sync, a dry run, a retry or a
    connection test (each uses the integration's credentials) is the manager's -- also
    through RPC, where a hidden button is no protection."""

    def test_integration_user_cannot_use_the_credentials_through_rpc(self):
        flow = self.make_flow()
        self.assertTrue(self.user.has_group(USER))
        calls = [
            ("apicenter.flow", "action_run_now", flow.id),
            ("apicenter.flow", "action_dry_run", flow.id),
            ("apicenter.integration", "action_test_bb_connection", flow.integration_id.id),
            ("apicenter.integration", "action_test_visma_connection", flow.integration_id.id),
        ]
        for model, method, record_id in calls:
            with self.subTest(method=method), self.assertRaises(AccessError):
                call_kw(self.env[model].with_user(self.user), method, [[record_id]], {})
        self.env.invalidate_all()
        self.assertFalse(flow.run_ids, "no run was started")

    def test_manager_starts_a_run_through_rpc(self):
        flow = self.make_flow()
        as_manager = self.env["apicenter.flow"].with_user(self.manager)
        started = []

        def fake_run(records, dry_run=False):
            started.append((records.env.uid, dry_run))
            return records.env["apicenter.run"]

        with patch.object(self.registry["apicenter.flow"], "_run", fake_run):
            for method in ("action_run_now", "action_dry_run"):
                call_kw(as_manager, method, [[flow.id]], {})
        self.assertEqual(started, [(self.manager.id, False), (self.manager.id, True)])
