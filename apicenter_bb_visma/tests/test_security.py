# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged

from .common import SECRETS, USER, ApicenterCase

CREDENTIALS = ["bb_api_client", *SECRETS, "visma_client_id", "visma_tenant_id"]


@tagged("post_install", "-at_install")
class TestSecurity(ApicenterCase):
    def test_integration_user_gets_access_error_on_each_credential(self):
        as_user = self.integration.with_user(self.user)
        for field_name in CREDENTIALS:
            with self.subTest(field=field_name), self.assertRaises(AccessError):
                as_user.read([field_name])

    def test_integration_user_reads_integration_without_credentials(self):
        as_user = self.integration.with_user(self.user)
        [values] = as_user.read(["name", "state", "visma_company_id", "bb_base_url"])
        self.assertEqual(values["name"], "Test integration")
        # the credential fields are not even part of what the user's client can ask for
        self.assertFalse(set(CREDENTIALS) & set(as_user.fields_get()))

    def test_every_view_opens_for_a_user_and_shows_no_credential(self):
        for model in [
            "apicenter.integration",
            "apicenter.flow",
            "apicenter.run",
            "apicenter.log",
            "apicenter.link",
            "apicenter.mapping",
            "apicenter.value.map",
        ]:
            for who in (self.user, self.manager):
                with self.subTest(model=model, user=who.login):
                    views = (
                        self.env[model]
                        .with_user(who)
                        .get_views([(False, "list"), (False, "form"), (False, "search")])
                    )
                    form = views["views"]["form"]["arch"]
                    if model == "apicenter.integration":
                        shown = who == self.manager
                        self.assertEqual('name="bb_api_key"' in form, shown)
                        self.assertEqual('name="visma_client_secret"' in form, shown)

    def test_integration_user_cannot_configure(self):
        with self.assertRaises(AccessError):
            self.integration.with_user(self.user).write({"name": "changed"})
        with self.assertRaises(AccessError):
            self.env["apicenter.flow"].with_user(self.user).create(
                {"name": "x", "integration_id": self.integration.id, "flow_type": "orders"}
            )

    def test_integration_manager_reads_credentials(self):
        [values] = self.integration.with_user(self.manager).read(list(SECRETS))
        self.assertEqual({key: values[key] for key in SECRETS}, SECRETS)

    def test_duplicate_does_not_copy_secrets(self):
        copy = self.integration.with_user(self.manager).copy()
        for field_name in SECRETS:
            self.assertFalse(copy.sudo()[field_name], field_name)
        self.assertEqual(copy.sudo().bb_api_client, "client-id")

    def test_changing_a_credential_leaves_no_trace_in_the_chatter(self):
        integration = self.integration.copy({"name": "Tracked"}).with_user(self.manager)
        # end the creating "transaction": records created in it are never tracked
        self.env.flush_all()
        self.env.cr.precommit.run()
        integration.write({"bb_api_key": "new-key-value-42", "name": "Renamed"})
        # tracking values are written at commit time: run the pre-commit hooks now
        self.env.flush_all()
        self.env.cr.precommit.run()
        tracked = integration.sudo().message_ids.tracking_value_ids
        self.assertIn("name", tracked.field_id.mapped("name"))  # tracking works ...
        self.assertFalse(set(tracked.field_id.mapped("name")) & set(CREDENTIALS))  # ... not here
        texts = " ".join(
            str(v) for v in tracked.mapped("old_value_char") + tracked.mapped("new_value_char")
        )
        self.assertNotIn("new-key-value-42", texts)

    def test_records_of_another_company_are_invisible(self):
        other = self.env["res.company"].create({"name": "Other company"})
        theirs = self.env["apicenter.integration"].create(
            {"name": "Theirs", "company_id": other.id}
        )
        flow = self.env["apicenter.flow"].create(
            {"name": "Theirs", "integration_id": theirs.id, "flow_type": "stock"}
        )
        user = new_test_user(
            self.env,
            login="apicenter_user_main_company",
            groups=f"base.group_user,{USER}",
            company_id=self.env.company.id,
            company_ids=[self.env.company.id],
        )
        Integration = self.env["apicenter.integration"].with_user(user)
        self.assertIn(self.integration, Integration.search([]))
        self.assertNotIn(theirs, Integration.search([]))
        self.assertFalse(self.env["apicenter.flow"].with_user(user).search([("id", "=", flow.id)]))
        with self.assertRaises(AccessError):
            theirs.with_user(user).read(["name"])
