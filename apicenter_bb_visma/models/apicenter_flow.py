# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""A flow: one kind of data (customers, orders, ...) moved by one integration on a schedule.

The flow owns its scheduled action (kept in step by :meth:`_sync_cron`), its settings, its
mapping and its watermark. :meth:`_run` hands all of it to the pure flow class of
``bbvisma.flows`` and records the outcome; the business rules live in the pure core.
"""

import logging
import time

from odoo import api, fields, models

from ..sync.sink import FlowBusy, OdooRunSink
from .apicenter_run import RUN_STATES

_logger = logging.getLogger(__name__)

FLOW_TYPES = [
    ("customers", "Customers"),
    ("orders", "Orders"),
    ("products", "Products"),
    ("stock", "Stock"),
    ("prices", "Prices"),
    ("shipments", "Shipments"),
]
INTERVAL_TYPES = [
    ("minutes", "Minutes"),
    ("hours", "Hours"),
    ("days", "Days"),
    ("weeks", "Weeks"),
]
#: settings handed to the pure flow, per flow type (plus COMMON_SETTINGS for all)
COMMON_SETTINGS = ("branch", "batch_size", "watermark")
TYPE_SETTINGS = {
    "customers": ("company_rule", "match_by_email"),
    "orders": (
        "order_target",
        "visma_order_type",
        "status_filter",
        "date_from",
        "date_to",
        "use_default_debtor",
        "default_customer_number",
        "missing_sku_policy",
        "no_einvoice_policy",
        "fallback_item",
        "corrected_invoice_policy",
    ),
    "products": ("update_product_info", "variant_dimensions", "variant_base_pattern"),
    "stock": ("stock_mode", "warehouse_id_visma", "stock_opening_note"),
    "prices": (),
    "shipments": ("default_carrier",),
}


class ApicenterFlow(models.Model):
    _name = "apicenter.flow"
    _description = "APIcenter Flow"
    _inherit = ["mail.thread"]
    _order = "integration_id, sequence, id"

    name = fields.Char(required=True, tracking=True)
    sequence = fields.Integer(default=10)
    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True, tracking=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    flow_type = fields.Selection(FLOW_TYPES, string="Type", required=True, tracking=True)
    active = fields.Boolean(default=True, tracking=True)
    interval_number = fields.Integer(string="Run Every", default=15, required=True, tracking=True)
    interval_type = fields.Selection(
        INTERVAL_TYPES, string="Interval Unit", default="minutes", required=True, tracking=True
    )
    cron_id = fields.Many2one(
        "ir.cron", string="Scheduled Action", readonly=True, copy=False, ondelete="set null"
    )
    watermark = fields.Char(
        copy=False,
        help="Where the next run resumes reading the source (e.g. the last modification time "
        "seen). Empty: the next run reads everything.",
    )
    batch_size = fields.Integer(default=100, required=True)
    mapping_id = fields.Many2one(
        "apicenter.mapping",
        domain="[('flow_type', 'in', [flow_type, False])]",
        help="Rules that turn a source record into the Visma.net payload. Empty: the flow's "
        "built-in default rules.",
    )
    branch = fields.Char(
        string="Branch Override", help="Visma.net branch for this flow; empty: the integration's."
    )
    run_ids = fields.One2many("apicenter.run", "flow_id", string="Runs")
    last_run_id = fields.Many2one("apicenter.run", string="Latest Run", compute="_compute_last_run")
    last_run_date = fields.Datetime(string="Last Run", compute="_compute_last_run")
    last_run_state = fields.Selection(RUN_STATES, compute="_compute_last_run")
    last_run_message = fields.Text(compute="_compute_last_run")
    # -- customers --------------------------------------------------------------------------
    company_rule = fields.Selection(
        [("auto", "Automatic"), ("company", "Always a company"), ("person", "Always a person")],
        default="auto",
        help="Whether a BuchhaltungsButler debtor becomes a company or a person in Visma.net. "
        "Automatic: a company when the debtor has a company name.",
    )
    match_by_email = fields.Boolean(
        string="Match Existing Customers by E-mail",
        default=True,
        help="Before creating a customer, look for one with the same e-mail in Visma.net.",
    )
    # -- orders -------------------------------------------------------------------------------
    order_target = fields.Selection(
        [("customer_invoice", "Customer invoice"), ("sales_order", "Sales order")],
        default="customer_invoice",
    )
    visma_order_type = fields.Char(string="Visma.net Order Type", default="SO")
    status_filter = fields.Selection(
        [("all", "All"), ("paid", "Paid only"), ("unpaid", "Unpaid only")], default="all"
    )
    date_from = fields.Date()
    date_to = fields.Date()
    use_default_debtor = fields.Boolean(
        help="Book documents without a known customer on one default customer."
    )
    default_customer_number = fields.Char()
    missing_sku_policy = fields.Selection(
        [("create", "Create the item"), ("park", "Park the document")],
        string="Unknown SKU",
        default="park",
    )
    no_einvoice_policy = fields.Selection(
        [("fallback", "One line on the fallback item"), ("park", "Park the document")],
        string="Document Without E-invoice",
        default="park",
    )
    fallback_item = fields.Char(
        help="Visma.net item for lines without a seller-assigned id (services, free text)."
    )
    corrected_invoice_policy = fields.Selection(
        [("new_invoice", "New invoice referencing the original"), ("park", "Park the document")],
        string="Corrected Invoices (384)",
        default="park",
    )
    # -- products -----------------------------------------------------------------------------
    update_product_info = fields.Boolean(
        string="Update Product Information",
        help="Also update description and attributes of items that exist already.",
    )
    variant_dimensions = fields.Char(
        help="Comma-separated characteristic names that make a variant, e.g. "
        "Farbe,Color,Größe,Size.",
    )
    variant_base_pattern = fields.Char(
        help="Regular expression whose first group is the base SKU of a variant SKU.",
    )
    # -- stock --------------------------------------------------------------------------------
    stock_mode = fields.Selection(
        [
            ("on_hand", "On hand"),
            ("available_minus_reserved", "Available minus reserved"),
            ("unmanaged", "Not managed"),
        ],
        default="available_minus_reserved",
    )
    warehouse_id_visma = fields.Char(string="Visma.net Warehouse")
    stock_opening_note = fields.Text(
        string="Opening Balance Notes",
        help="How the opening stock balance was established, for the auditor.",
    )
    # -- shipments ----------------------------------------------------------------------------
    default_carrier = fields.Char()

    _positive_interval = models.Constraint(
        "CHECK(interval_number > 0)", "The interval must be a positive number."
    )
    _positive_batch = models.Constraint(
        "CHECK(batch_size > 0)", "The batch size must be a positive number."
    )

    def _compute_last_run(self):
        """Read from the runs rather than stored on the flow: a run is written through its own
        cursor, which must never write the flow row (see sync/sink.py, lock discipline)."""
        latest = dict(
            self.env["apicenter.run"]._read_group(
                [("flow_id", "in", self.ids)], ["flow_id"], ["id:max"]
            )
        )
        for flow in self:
            run = self.env["apicenter.run"].browse(latest.get(flow))
            flow.last_run_id = run
            flow.last_run_date = run.date_start
            flow.last_run_state = run.state
            flow.last_run_message = run.message

    # -- the scheduled action -------------------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        flows = super().create(vals_list)
        flows._sync_cron()
        return flows

    def write(self, vals):
        result = super().write(vals)
        if {"active", "interval_number", "interval_type", "name", "integration_id"} & set(vals):
            self._sync_cron()
        return result

    def unlink(self):
        crons = self.sudo().cron_id
        result = super().unlink()
        crons.unlink()
        return result

    def _cron_should_run(self):
        integration = self.integration_id
        return self.active and integration.active and integration.state == "active"

    def _sync_cron(self):
        """Create or update each flow's ir.cron; it is active only while the flow can run."""
        model = self.env["ir.model"]._get_id(self._name)
        for flow in self.sudo().with_context(active_test=False):
            vals = {
                "name": f"APIcenter: {flow.integration_id.name} / {flow.name}",
                "interval_number": flow.interval_number,
                "interval_type": flow.interval_type,
                "active": flow._cron_should_run(),
            }
            if flow.cron_id:
                flow.cron_id.write(vals)
                continue
            vals.update(
                model_id=model,
                state="code",
                code=f"model._cron_run({flow.id})",
                user_id=self.env.ref("base.user_root").id,
            )
            flow.cron_id = self.env["ir.cron"].create(vals)

    @api.model
    def _cron_run(self, flow_id):
        """Entry point of the scheduled action of flow ``flow_id``."""
        flow = self.browse(flow_id).exists()
        if not flow or not flow._cron_should_run():
            _logger.info("apicenter flow %s: not runnable now, scheduled run skipped", flow_id)
            return
        try:
            flow._run()
        except FlowBusy as exc:
            _logger.info("apicenter flow %s: scheduled run skipped: %s", flow_id, exc)

    # -- running ------------------------------------------------------------------------------
    def action_run_now(self):
        self.ensure_one()
        run = self._run()
        return {
            "type": "ir.actions.act_window",
            "res_model": "apicenter.run",
            "res_id": run.id,
            "view_mode": "form",
            "target": "current",
        }

    def action_dry_run(self):
        self.ensure_one()
        run = self._run(dry_run=True)
        return {
            "type": "ir.actions.act_window",
            "res_model": "apicenter.run",
            "res_id": run.id,
            "view_mode": "form",
            "target": "current",
        }

    def _flow_settings(self):
        """The settings the pure flow reads, as plain values (no recordsets)."""
        self.ensure_one()
        names = COMMON_SETTINGS + TYPE_SETTINGS.get(self.flow_type, ())
        settings = {name: self[name] for name in names}
        settings["flow_type"] = self.flow_type
        settings["branch"] = self.branch or self.integration_id.visma_branch or False
        return {key: (value if value is not False else None) for key, value in settings.items()}

    def _run(self, dry_run=False):
        """Run this flow once and return its apicenter.run record.

        The run, its log lines and the links are written through the sink's own cursor, so
        they survive when this transaction is rolled back. A run the engine aborted (wrong
        credentials or settings, unreadable source) ends ``failed`` with the reason; an
        authentication or configuration error also puts the integration in ``error``, which
        pauses its schedule. Any exception that escapes the engine is a bug: the run is closed
        as ``failed`` and the exception is raised again so that it is seen.
        """
        from bbvisma.errors import BBVismaError

        # imported here: only a run needs the engine of the core
        from ..sync.context import build_flow_context, load_flow_class

        self.ensure_one()
        started = time.monotonic()
        sink = OdooRunSink.open(self, dry_run=dry_run)
        try:
            flow_class = load_flow_class(self.flow_type)
            if flow_class is None:
                return sink.close(
                    "failed", f"flow type {self.flow_type} is not available in this version"
                )
            with build_flow_context(self, sink, dry_run) as flow_context:
                report = flow_class(flow_context).run(since=self.watermark or None)
        except BBVismaError as exc:
            self._note_setup_error(exc.cause_key, dry_run)
            return sink.close("failed", exc.message, cause_key=exc.cause_key)
        except Exception as exc:
            if not sink.closed:
                sink.close("failed", f"Unexpected error: {type(exc).__name__}: {exc}")
            raise
        finally:
            _logger.info(
                "apicenter flow %s (%s) ran in %.1fs",
                self.id,
                self.flow_type,
                time.monotonic() - started,
            )
        if report.aborted:
            self._note_setup_error(sink.abort_cause, dry_run)
            return sink.close("failed", report.aborted, cause_key=sink.abort_cause)
        return sink.close()

    def _note_setup_error(self, cause_key, dry_run):
        """Credentials or settings are wrong: pause the integration's schedule."""
        if not dry_run and (cause_key or "").startswith(("auth:", "config:")):
            self.integration_id.state = "error"
