# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from unittest.mock import patch

from odoo.exceptions import UserError
from odoo.tests import tagged

from bbvisma.errors import AuthError

from .common import SECRETS, ApicenterCase


class FakeClient:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.closed = result, error, False

    def check_connection(self):
        if self.error:
            raise self.error
        return self.result

    def close(self):
        self.closed = True


@tagged("post_install", "-at_install")
class TestConnection(ApicenterCase):
    def _patch_client(self, client):
        calls = []

        def factory(integration, system, **options):
            calls.append(system)
            return client

        Integration = type(self.env["apicenter.integration"])
        self.startPatcher(patch.object(Integration, "_get_client", factory))
        return calls

    def test_successful_test_shows_a_notification_and_notes_it(self):
        client = FakeClient(result={"ok": True, "debtors_visible": True})
        calls = self._patch_client(client)
        action = self.integration.action_test_bb_connection()
        self.assertEqual(calls, ["bb"])
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn("debtors_visible: True", action["params"]["message"])
        self.assertIn("succeeded", self.integration.message_ids[0].body)
        self.assertTrue(client.closed)

    def test_failed_test_raises_the_apis_message_without_secrets(self):
        # even if a message carried a secret, the integration redacts it once more
        error = AuthError(
            f"invalid_client (secret {SECRETS['visma_client_secret']} rejected)", system="visma"
        )
        client = FakeClient(error=error)
        calls = self._patch_client(client)
        with self.assertRaises(UserError) as caught:
            self.integration.action_test_visma_connection()
        self.assertEqual(calls, ["visma"])
        text = str(caught.exception)
        self.assertIn("Visma.net", text)
        self.assertIn("invalid_client", text)
        self.assertNotIn(SECRETS["visma_client_secret"], text)
        self.assertTrue(client.closed)

    def test_client_factory_passes_the_integration_settings(self):
        kwargs = self.integration._client_kwargs("visma")
        self.assertEqual(kwargs["client_secret"], SECRETS["visma_client_secret"])
        self.assertEqual(kwargs["token_url"], "http://127.0.0.1:8072/connect/token")
        self.assertEqual(
            set(self.integration._client_kwargs("bb")),
            {"base_url", "api_client", "api_secret", "api_key"},
        )

    def test_real_bb_client_against_the_simulator_in_process(self):
        try:
            from bbvisma.buchhaltungsbutler.client import BBClient
            from bbvisma.simulators.buchhaltungsbutler import BBSimulator, default_seed
            from bbvisma.simulators.common import sim_http_client
        except ImportError as exc:  # the core is built in parallel; say so, do not hide it
            self.skipTest(f"BuchhaltungsButler client or simulator not available: {exc}")
        seed = default_seed()
        sim = BBSimulator(quota_per_minute=None)
        sim.load_seed(seed)
        credentials = seed["api_clients"][0]
        self.integration.write(
            {
                "bb_api_client": credentials["api_client"],
                "bb_api_secret": credentials["api_secret"],
                "bb_api_key": seed["companies"][0]["api_key"],
            }
        )
        Integration = type(self.env["apicenter.integration"])
        original = Integration._get_client

        def over_simulator(integration, system, **options):
            options["http_client"] = sim_http_client(sim, "http://127.0.0.1:8071")
            client = original(integration, system, **options)
            self.assertIsInstance(client, BBClient)  # the real client, over the simulator
            return client

        with patch.object(Integration, "_get_client", over_simulator):
            action = self.integration.action_test_bb_connection()
            self.assertEqual(action["params"]["type"], "success")
            self.integration.bb_api_key = "wrong-key-0000"
            with self.assertRaises(UserError) as caught:
                self.integration.action_test_bb_connection()
        self.assertIn("BuchhaltungsButler", str(caught.exception))
        self.assertNotIn("wrong-key-0000", str(caught.exception))
