# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The integration: one BuchhaltungsButler account connected to one Visma.net company.

It holds the credentials (readable by the Integration Manager group only), builds the API
clients of the pure core in one place (:meth:`_get_client`), and purges old runs and logs.
"""

import logging
from datetime import timedelta

from odoo import api, fields, models, modules
from odoo.exceptions import AccessError, UserError, ValidationError

from ..sync.sink import payload_text

_logger = logging.getLogger(__name__)

MANAGER_GROUP = "apicenter_bb_visma.group_apicenter_manager"
BB_DEFAULT_URL = "https://webapp.buchhaltungsbutler.de/api/v1"
VISMA_DEFAULT_URL = "https://api.finance.visma.net"
VISMA_DEFAULT_TOKEN_URL = "https://connect.visma.com/connect/token"
#: the credential fields, in one list so that redaction and copy rules cannot forget one
SECRET_FIELDS = ("bb_api_secret", "bb_api_key", "visma_client_secret")


def check_manager(env, message):
    """Raise AccessError with ``message`` unless the user is an Integration Manager.

    For the buttons that USE the integration's credentials (run, dry run, retry, connection
    tests): an Integration User may read runs and logs but must not make the integration call
    either API -- and a button is also a public method anyone can call through RPC, so hiding
    it in the view is not enough. The superuser (scheduled actions) passes.
    """
    if not (env.su or env.user.has_group(MANAGER_GROUP)):
        raise AccessError(message)


#: ids deleted per statement by the retention purge: small enough to hold locks briefly
PURGE_BATCH_SIZE = 5000


class ApicenterIntegration(models.Model):
    _name = "apicenter.integration"
    _description = "APIcenter Integration"
    _inherit = ["mail.thread"]
    _order = "name, id"

    name = fields.Char(required=True, tracking=True)
    active = fields.Boolean(default=True, tracking=True)
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, tracking=True
    )
    state = fields.Selection(
        [("draft", "Draft"), ("active", "Active"), ("error", "Error")],
        default="draft",
        required=True,
        tracking=True,
        copy=False,
        help="Draft: being set up, the flows run only on demand. Active: the flows also run on "
        "their schedule. Error: a run stopped on an authentication or configuration error; the "
        "schedule is paused until a manager fixes the setup and activates the integration again.",
    )
    # -- BuchhaltungsButler (source) ------------------------------------------------------------
    bb_base_url = fields.Char(
        string="BuchhaltungsButler Base URL", required=True, default=BB_DEFAULT_URL
    )
    bb_api_client = fields.Char(string="BuchhaltungsButler API Client", groups=MANAGER_GROUP)
    bb_api_secret = fields.Char(
        string="BuchhaltungsButler API Secret", groups=MANAGER_GROUP, copy=False
    )
    bb_api_key = fields.Char(string="BuchhaltungsButler API Key", groups=MANAGER_GROUP, copy=False)
    # -- Visma.net (target) --------------------------------------------------------------------
    visma_base_url = fields.Char(
        string="Visma.net Base URL", required=True, default=VISMA_DEFAULT_URL
    )
    visma_token_url = fields.Char(
        string="Visma.net Token URL", required=True, default=VISMA_DEFAULT_TOKEN_URL
    )
    visma_client_id = fields.Char(string="Visma.net Client ID", groups=MANAGER_GROUP)
    visma_client_secret = fields.Char(
        string="Visma.net Client Secret", groups=MANAGER_GROUP, copy=False
    )
    visma_tenant_id = fields.Char(string="Visma.net Tenant ID", groups=MANAGER_GROUP)
    visma_company_id = fields.Char(string="Visma.net Company ID")
    visma_branch = fields.Char(string="Visma.net Branch")
    # -- operation -----------------------------------------------------------------------------
    notify_partner_ids = fields.Many2many(
        "res.partner",
        string="Notification Recipients",
        help="Receive a message when a run fails or parks records.",
    )
    log_retention_days = fields.Integer(
        string="Log Retention (days)",
        default=30,
        required=True,
        help="Runs and activity log lines older than this are deleted every day.",
    )
    flow_ids = fields.One2many("apicenter.flow", "integration_id", string="Flows")
    flow_count = fields.Integer(compute="_compute_counts")
    run_count = fields.Integer(compute="_compute_counts")

    _positive_retention = models.Constraint(
        "CHECK(log_retention_days > 0)", "The log retention must be at least one day."
    )

    def _compute_counts(self):
        flows = dict(
            self.env["apicenter.flow"]
            .with_context(active_test=False)
            ._read_group([("integration_id", "in", self.ids)], ["integration_id"], ["__count"])
        )
        runs = dict(
            self.env["apicenter.run"]._read_group(
                [("integration_id", "in", self.ids)], ["integration_id"], ["__count"]
            )
        )
        for integration in self:
            integration.flow_count = flows.get(integration, 0)
            integration.run_count = runs.get(integration, 0)

    @api.constrains("bb_base_url", "visma_base_url", "visma_token_url")
    def _check_urls(self):
        """https only, except loopback (the simulators): the same rule the transport enforces."""
        from bbvisma.errors import ConfigError
        from bbvisma.transport import validate_base_url

        for integration in self:
            for field_name in ("bb_base_url", "visma_base_url", "visma_token_url"):
                try:
                    validate_base_url(integration[field_name], what=self._fields[field_name].string)
                except ConfigError as exc:
                    raise ValidationError(exc.message) from exc

    # -- lifecycle -----------------------------------------------------------------------------
    def write(self, vals):
        result = super().write(vals)
        if {"state", "active"} & set(vals):
            # scheduled runs follow the integration's state
            self.with_context(active_test=False).flow_ids._sync_cron()
        return result

    def unlink(self):
        # through the ORM, so that each flow takes its scheduled action along
        self.with_context(active_test=False).flow_ids.unlink()
        return super().unlink()

    def action_activate(self):
        self.write({"state": "active"})

    def action_set_draft(self):
        self.write({"state": "draft"})

    def action_open_flows(self):
        return self._open_related("apicenter.flow", self.env._("Flows"))

    def action_open_runs(self):
        return self._open_related("apicenter.run", self.env._("Runs"))

    def _open_related(self, model, name):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": model,
            "view_mode": "list,form",
            "domain": [("integration_id", "=", self.id)],
            "context": {"default_integration_id": self.id},
        }

    # -- clients of the pure core --------------------------------------------------------------
    def _client_kwargs(self, system):
        """The keyword arguments of the core's client for ``system`` ("bb" or "visma")."""
        self.ensure_one()
        rec = self.sudo()
        if system == "bb":
            return {
                "base_url": rec.bb_base_url,
                "api_client": rec.bb_api_client,
                "api_secret": rec.bb_api_secret,
                "api_key": rec.bb_api_key,
            }
        if system == "visma":
            return {
                "base_url": rec.visma_base_url,
                "token_url": rec.visma_token_url,
                "client_id": rec.visma_client_id,
                "client_secret": rec.visma_client_secret,
                "tenant_id": rec.visma_tenant_id,
                "company_id": rec.visma_company_id,
                "branch": rec.visma_branch,
            }
        raise ValueError(f"unknown system {system!r}")

    def _get_client(self, system, **options):
        """Build the API client of the pure core for ``system``: THE one place that does it.

        Tests replace this method to inject a fake client (or a client over an in-process
        transport); ``options`` are passed through to the client (e.g. ``on_exchange``).
        """
        kwargs = self._client_kwargs(system)
        kwargs.update(options)
        if system == "bb":
            from bbvisma.buchhaltungsbutler.client import BBClient

            return BBClient(**kwargs)
        from bbvisma.vismanet.client import VismaClient

        return VismaClient(**kwargs)

    def action_test_bb_connection(self):
        return self._test_connection("bb", self.env._("BuchhaltungsButler"))

    def action_test_visma_connection(self):
        return self._test_connection("visma", self.env._("Visma.net"))

    def _test_connection(self, system, label):
        """Call the client's ``check_connection``; success as a notification, failure raises.

        A typed error of the core (:class:`bbvisma.errors.BBVismaError`) carries an already
        redacted message; it is redacted once more with this integration's secrets before it
        is shown, so a secret can never reach the screen.
        """
        from bbvisma.errors import BBVismaError

        self.ensure_one()
        check_manager(self.env, self.env._("Only an Integration Manager can test a connection."))
        try:
            client = self._get_client(system)
        except ImportError as exc:
            raise UserError(
                self.env._(
                    "The %(system)s client is not available in this version: %(error)s",
                    system=label,
                    error=exc,
                )
            ) from exc
        except BBVismaError as exc:
            raise self._connection_error(label, exc) from exc
        try:
            result = client.check_connection()
        except BBVismaError as exc:
            raise self._connection_error(label, exc) from exc
        finally:
            close = getattr(client, "close", None)
            if close:
                close()
        detail = self._redact_text(_describe(result))
        self.message_post(
            body=self.env._(
                "Connection test to %(system)s succeeded. %(detail)s", system=label, detail=detail
            )
        )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Connection successful"),
                "message": self.env._(
                    "%(system)s answered. %(detail)s", system=label, detail=detail
                ),
                "type": "success",
                "sticky": False,
            },
        }

    def _connection_error(self, label, exc):
        message = self._redact_text(exc.message)
        return UserError(
            self.env._(
                "Connection to %(system)s failed: %(message)s", system=label, message=message
            )
        )

    # -- redaction (defence in depth: the core already redacts) --------------------------------
    def _redactor(self):
        from bbvisma.transport import Redactor

        self.ensure_one()
        rec = self.sudo()
        return Redactor([rec[name] for name in SECRET_FIELDS] + [rec.visma_client_id])

    def _redact_text(self, text):
        return self._redactor().redact_text(text or "")

    def _redact_payload(self, value, redactor=None):
        """Return ``value`` as redacted JSON text (or False), ready for a log line's Text field."""
        return payload_text(value, redactor or self._redactor())

    # -- retention ----------------------------------------------------------------------------
    @api.model
    def _cron_purge_expired(self):
        """Daily: delete runs and log lines older than each integration's retention (GDPR)."""
        self._purge_expired(commit=not modules.module.current_test)

    @api.model
    def _purge_expired(self, batch_size=PURGE_BATCH_SIZE, commit=False, now=None):
        """Delete, per integration, what is older than its retention, ``batch_size`` ids a time.

        Each statement deletes a bounded set of ids by primary key, so no statement holds its
        row locks for long; with ``commit`` (the cron, never the tests) each batch is committed
        before the next one is selected. Returns ``(logs_deleted, runs_deleted)``.
        """
        now = now or fields.Datetime.now()
        logs_deleted = runs_deleted = 0
        # a handful of integrations per database: reading them all is cheap
        integrations = self.sudo().with_context(active_test=False).search([])  # pylint: disable=no-search-all
        for integration in integrations:
            cutoff = now - timedelta(days=integration.log_retention_days)
            for model, domain in self._purge_domains(integration, cutoff).items():
                deleted = self._purge_model(model, domain, batch_size, commit)
                if model == "apicenter.log":
                    logs_deleted += deleted
                elif model == "apicenter.run":
                    runs_deleted += deleted
        if logs_deleted or runs_deleted:
            _logger.info("retention purge: %s log lines, %s runs", logs_deleted, runs_deleted)
        return logs_deleted, runs_deleted

    @api.model
    def _purge_domains(self, integration, cutoff):
        """What the purge deletes of ``integration``, model -> domain, in the order given:
        log lines and runs older than ``cutoff`` (a run takes its log lines along). Extensions
        add their models (the documents, the resolved problems)."""
        return {
            "apicenter.log": [("integration_id", "=", integration.id), ("date", "<", cutoff)],
            "apicenter.run": [("integration_id", "=", integration.id), ("date_start", "<", cutoff)],
        }

    def _purge_model(self, model, domain, batch_size, commit):
        records = self.env[model].sudo()
        total = 0
        while True:
            batch = records.search(domain, limit=batch_size, order="id")
            if not batch:
                return total
            total += len(batch)
            batch.unlink()
            if commit:
                self.env.cr.commit()  # pylint: disable=invalid-commit
            if len(batch) < batch_size:
                return total


def _describe(result):
    """A short human text for whatever ``check_connection`` returned."""
    if result is None or result is True:
        return ""
    if isinstance(result, dict):
        return ", ".join(f"{key}: {value}" for key, value in result.items())
    return str(result)
