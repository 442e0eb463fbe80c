# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""A flow: one kind of data (customers, orders, ...) moved by one integration on a schedule.

The flow owns its scheduled action (kept in step by :meth:`_sync_cron`), its settings, its
mapping and its watermark. :meth:`_run` hands all of it to the pure flow class of
``bbvisma.flows`` and records the outcome; the business rules live in the pure core.
"""

import logging
import time

from odoo import api, fields, models
from odoo.exceptions import ValidationError
from odoo.tools.translate import LazyTranslate

from ..sync.sink import FlowBusy, OdooRunSink
from .apicenter_integration import check_manager
from .apicenter_run import RUN_STATES

_logger = logging.getLogger(__name__)
_lt = LazyTranslate(__name__)

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
#: the settings each pure flow reads (its ``SETTINGS_DEFAULTS`` keys; a test keeps them in
#: step): setting key -> field of this model, or a method name ending in ``()`` for a key
#: built from several fields or other records
TYPE_SETTINGS = {
    "customers": {
        "company_rule": "company_rule",
        "match_by_email": "match_by_email",
        "update_on_match": "update_on_match",
    },
    "orders": {
        "order_target": "order_target",
        "visma_order_type": "visma_order_type",
        "status_filter": "status_filter",
        "date_from": "date_from",
        "date_to": "date_to",
        "use_default_debtor": "use_default_debtor",
        "default_customer_number": "default_customer_number",
        "missing_sku_policy": "missing_sku_policy",
        "no_einvoice_policy": "no_einvoice_policy",
        "fallback_item": "fallback_item",
        "corrected_invoice_policy": "corrected_invoice_policy",
        "branch": "_setting_branch()",
        "overlap_minutes": "overlap_minutes",
        "external_reference_prefix": "external_reference_prefix",
        "new_item_class": "new_item_class",
        "customer_settings": "_setting_customer_settings()",
        "customer_mapping": "_setting_customer_mapping()",
        "totals_tolerance": "_setting_totals_tolerance()",
        "documents_since": "_setting_documents_since()",
    },
    "products": {
        "update_product_info": "update_product_info",
        "variant_dimensions": "variant_dimensions",
        "variant_base_pattern": "variant_base_pattern",
        "variant_base_attribute": "variant_base_attribute",
        "base_currency": "base_currency",
    },
    "stock": {
        "stock_mode": "stock_mode",
        "warehouse_id_visma": "warehouse_id_visma",
        "opening_balances": "_setting_opening_balances()",
        "base_currency": "base_currency",
        "adjustment_lookup_days": "adjustment_lookup_days",
        "branch": "_setting_branch()",
    },
    "prices": {"base_currency": "base_currency"},
    "shipments": {"default_carrier": "default_carrier", "package_box_id": "package_box_id"},
}
#: flow types whose runs can fan out into parallel queue_job batches (see sync/fanout.py)
PARALLEL_FLOW_TYPES = ("customers", "orders")

#: the products flow's note on images (bbvisma.flows.products.IMAGES_NOTE, kept equal by a
#: test): a literal here so that it can be translated
IMAGES_NOTE = _lt(
    "BuchhaltungsButler holds no product images: its API has no product endpoint and e-invoice "
    "lines carry no pictures. Item images can only be added in Visma.net itself (the item's "
    "attachments); this flow uploads none."
)


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
    parallel_batches = fields.Boolean(
        help="Split each run into batches that queue_job workers process in parallel (for "
        "large volumes; needs running queue_job workers). Off: the scheduled action runs the "
        "whole flow itself, batch after batch. Available for customers and orders.",
    )
    # Defaults below are the pure flows' SETTINGS_DEFAULTS (a test keeps them equal), so a
    # flow behaves the same whether it runs in Odoo, in the tests of the core or in the bench.
    # -- customers ----------------------------------------------------------------------------
    company_rule = fields.Selection(
        [("auto", "Automatic"), ("company", "Always a company"), ("person", "Always a person")],
        default="auto",
        help="Whether a BuchhaltungsButler debtor becomes a company or a person in Visma.net. "
        "Automatic: a company when the debtor names a contact person, a legal form (GmbH, AG, "
        "Ltd, ...) or a VAT id.",
    )
    match_by_email = fields.Boolean(
        string="Match Existing Customers by E-mail",
        default=True,
        help="Before creating a customer, look for one with the same e-mail in Visma.net.",
    )
    update_on_match = fields.Boolean(
        string="Update Matched Customers",
        default=True,
        help="A Visma.net customer found by e-mail or by its number gets the debtor's data. "
        "Off: it is linked as it is.",
    )
    # -- orders -------------------------------------------------------------------------------
    order_target = fields.Selection(
        [("customer_invoice", "Customer invoice"), ("sales_order", "Sales order")],
        default="customer_invoice",
        help="What an outgoing invoice becomes in Visma.net; credit notes always become "
        "customer credit notes.",
    )
    visma_order_type = fields.Char(string="Visma.net Order Type", default="SO")
    status_filter = fields.Selection(
        [("all", "All"), ("paid", "Paid only"), ("unpaid", "Unpaid only")], default="all"
    )
    date_from = fields.Date(help="Only receipts dated on or after this day.")
    date_to = fields.Date(help="Only receipts dated on or before this day.")
    use_default_debtor = fields.Boolean(
        help="Book every document on one default customer instead of the document's buyer."
    )
    default_customer_number = fields.Char(
        help="Visma.net customer number of the default customer; also used for documents "
        "without any customer data."
    )
    missing_sku_policy = fields.Selection(
        [("create", "Create the item"), ("park", "Park the document")],
        string="Unknown SKU",
        default="park",
        help="A line whose SKU is not an item in Visma.net: create the item from the line, or "
        "park the document naming the SKU.",
    )
    no_einvoice_policy = fields.Selection(
        [("fallback", "One line per VAT rate on the fallback item"), ("park", "Park it")],
        string="Document Without E-invoice",
        default="fallback",
        help="A receipt without a readable e-invoice (a plain PDF) has no lines.",
    )
    fallback_item = fields.Char(
        default="SERVICE",
        help="Visma.net item for lines without a seller-assigned id (services, free text) and "
        "for documents without e-invoice.",
    )
    corrected_invoice_policy = fields.Selection(
        [("new_invoice", "New invoice referencing the original"), ("park", "Park the document")],
        string="Corrected Invoices (384)",
        default="new_invoice",
    )
    overlap_minutes = fields.Integer(
        string="Overlap (minutes)",
        default=10,
        help="Receipts changed this long before the last run are read again: "
        "BuchhaltungsButler filters by its own wall-clock time.",
    )
    external_reference_prefix = fields.Char(
        default="BB-",
        help="Prefix of the external reference written on each document (prefix + receipt "
        "id). The flow looks documents up by it before creating one, so never change it once "
        "documents were sent.",
    )
    new_item_class = fields.Char(
        string="Class of New Items",
        help="Visma.net item class of items created from document lines. Empty: Visma.net's "
        "default class.",
    )
    totals_tolerance = fields.Float(
        digits=(16, 4),
        default=0.01,
        help="Allowed difference per document line between the totals Visma.net computes and "
        "the document's; a larger one is reported as an error on the record.",
    )
    documents_since = fields.Datetime(
        string="Documents Created Since",
        help="A run with many documents to create reads the Visma.net documents created since "
        "this moment once, page by page, instead of looking each document up before its "
        "create. Nothing this integration sent can be older. Empty: the moment the "
        "integration was created. It can only be set earlier: when documents of this account "
        "were sent by an earlier integration that this one replaces.",
    )
    # -- products -----------------------------------------------------------------------------
    update_product_info = fields.Boolean(
        string="Update Product Information",
        help="On: an update sends everything mapped. Off: an update sends only price, unit "
        "and attributes and never overwrites a description completed in Visma.net.",
    )
    variant_dimensions = fields.Char(
        default="Farbe,Color,Größe,Size",
        help="Comma-separated characteristic names that make a variant.",
    )
    variant_base_pattern = fields.Char(
        default=r"^(?P<base>[^-]+)-.+$",
        help="Regular expression that finds the base SKU of a variant SKU: its group named "
        "'base', else its first group.",
    )
    variant_base_attribute = fields.Char(
        default="BASESKU",
        help="Visma.net attribute that carries a variant's base SKU.",
    )
    base_currency = fields.Char(
        default="EUR",
        help="Prices and values are taken from documents in this currency only.",
    )
    images_note = fields.Text(string="Images", compute="_compute_images_note")
    # -- stock --------------------------------------------------------------------------------
    stock_mode = fields.Selection(
        [
            ("on_hand", "On hand"),
            ("available_minus_reserved", "Available minus reserved"),
            ("unmanaged", "Not managed"),
        ],
        default="available_minus_reserved",
        help="On hand: the quantity derived from the documents. Available minus reserved: "
        "less what open sales orders in Visma.net reserve. Not managed: items are sent as "
        "non-stock items and no quantity is written.",
    )
    warehouse_id_visma = fields.Char(
        string="Visma.net Warehouse",
        help="Empty: the only active warehouse of the Visma.net company.",
    )
    adjustment_lookup_days = fields.Integer(
        string="Adjustment Lookup (days)",
        default=30,
        help="How far back the flow looks for its own inventory adjustment before creating "
        "one (a lost answer never leads to a second adjustment).",
    )
    opening_balance_ids = fields.One2many(
        "apicenter.flow.opening.balance", "flow_id", string="Opening Balances", copy=True
    )
    stock_opening_note = fields.Text(
        string="Opening Balance Notes",
        help="How the opening stock balance was established, for the auditor.",
    )
    # -- shipments ----------------------------------------------------------------------------
    default_carrier = fields.Char(
        help="Visma.net carrier of a shipment when the value map 'carriers' recognizes none "
        "in the document's notes or delivery party."
    )
    package_box_id = fields.Char(
        help="Visma.net box of the package line that carries the tracking number. Empty: no "
        "package line (a tracking number is reported, not written).",
    )

    _positive_interval = models.Constraint(
        "CHECK(interval_number > 0)", "The interval must be a positive number."
    )
    _positive_batch = models.Constraint(
        "CHECK(batch_size > 0)", "The batch size must be a positive number."
    )

    def _compute_images_note(self):
        note = self.env._(IMAGES_NOTE)  # in the user's language
        for flow in self:
            flow.images_note = note if flow.flow_type == "products" else False

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
        """Create or update each flow's ir.cron; it is active only while the flow can run.

        Runs as superuser: the scheduled action belongs to the flow, and an Integration Manager
        who may create and edit flows has no right on ir.cron itself."""
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
            flow.cron_id = self.env["ir.cron"].sudo().create(vals)

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
        check_manager(self.env, self.env._("Only an Integration Manager can run a flow."))
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
        # a dry run writes nothing, but it reads BuchhaltungsButler with the credentials
        check_manager(self.env, self.env._("Only an Integration Manager can run a flow."))
        run = self._run(dry_run=True)
        return {
            "type": "ir.actions.act_window",
            "res_model": "apicenter.run",
            "res_id": run.id,
            "view_mode": "form",
            "target": "current",
        }

    # -- settings of the pure flow ----------------------------------------------------------------
    def _flow_settings(self):
        """The settings the pure flow reads (TYPE_SETTINGS), as plain values.

        An empty field is ``None``, which the flows read as "use my default"; a Boolean is
        passed as it is (False is a choice, not an empty field).
        """
        self.ensure_one()
        settings = {}
        for key, source in TYPE_SETTINGS.get(self.flow_type, {}).items():
            if source.endswith("()"):
                value = getattr(self, source[:-2])()
            else:
                value = self[source]
                field = self._fields[source]
                if field.type == "boolean":
                    value = bool(value)
                elif field.type == "date":
                    value = value.isoformat() if value else None
                elif value is False or value == "":
                    value = None
            settings[key] = value
        return settings

    def _setting_branch(self):
        return self.branch or self.integration_id.visma_branch or None

    @api.constrains("documents_since")
    def _check_documents_since(self):
        """Only earlier than the integration's creation: a later bound would hide documents
        the integration sent from the lookup before a create -- after a lost link, the
        receipt would be sent a second time."""
        for flow in self:
            created = flow.integration_id.create_date
            if flow.documents_since and created and flow.documents_since > created:
                raise ValidationError(
                    self.env._(
                        "Documents Created Since must not be later than the creation of the "
                        "integration (%(created)s): documents it sent since would be missed "
                        "by the lookup before a create and could be sent twice.",
                        created=created,
                    )
                )

    def _setting_documents_since(self):
        """ISO 8601 in UTC (how Odoo stores date-times): the flow's own value, else the
        creation of the integration -- it cannot have created a document before it existed."""
        moment = self.documents_since or self.integration_id.create_date
        return f"{moment.isoformat(timespec='seconds')}+00:00" if moment else None

    def _setting_totals_tolerance(self):
        # the flows compute with Decimal: pass the digits the field shows, not a float
        return f"{self.totals_tolerance:.4f}".rstrip("0").rstrip(".")

    def _setting_opening_balances(self):
        """``{sku: quantity}`` as text (the flow reads Decimals from it)."""
        return {
            line.sku.strip(): f"{line.quantity:f}".rstrip("0").rstrip(".") or "0"
            for line in self.opening_balance_ids
        }

    def _customers_flow(self):
        """The integration's customers flow: its settings and mapping make the customers
        an orders run creates, so the rules for customers are the same on both ways."""
        return (
            self.integration_id.with_context(active_test=False)
            .flow_ids.filtered(lambda flow: flow.flow_type == "customers")
            .sorted(lambda flow: (not flow.active, flow.sequence, flow.id))[:1]
        )

    def _setting_customer_settings(self):
        customers = self._customers_flow()
        return customers._flow_settings() if customers else None

    def _setting_customer_mapping(self):
        """The customers flow's mapping (a ``bbvisma.mapper.Mapping``), else the editable
        default of the customers type; None: the core's default."""
        from ..sync.context import flow_mapping, type_mapping

        customers = self._customers_flow()
        if customers:
            return flow_mapping(customers)
        return type_mapping(self.env, "customers", self.integration_id.company_id)

    def _run(self, dry_run=False):
        """Run this flow once and return its apicenter.run record.

        With parallel batches (customers and orders), the run is only queued here and the
        returned run is ``running`` until queue_job workers have processed its batches (see
        models/apicenter_run_batch.py); otherwise it runs here, batch after batch:

        The run, its log lines and the links are written through the sink's own cursor, so
        they survive when this transaction is rolled back. A run the engine aborted (wrong
        credentials or settings, unreadable source) ends ``failed`` with the reason; an
        authentication or configuration error also puts the integration in ``error``, which
        pauses its schedule. Any exception that escapes the engine is a bug: the run is closed
        as ``failed`` and the exception is raised again so that it is seen.
        """
        self.ensure_one()
        if self._runs_in_parallel(dry_run):
            from ..sync.fanout import enqueue_run

            return enqueue_run(self)
        sink = OdooRunSink.open(self, dry_run=dry_run)
        since = self.watermark or None
        return self._execute(sink, lambda flow: flow.run(since=since), dry_run=dry_run)

    def _execute(self, sink, operation, dry_run=False, what="run"):
        """Build the engine's flow for this record, call ``operation(flow)`` and close ``sink``.

        The one place that turns an engine outcome into a closed apicenter.run: a full run
        (:meth:`_run`) and a retry of given records (``Flow.replay``, see apicenter_flow_ops.py)
        differ only in ``operation``.
        """
        from bbvisma.errors import BBVismaError

        # imported here: only a run needs the engine of the core
        from ..sync.context import build_flow_context, load_flow_class

        started = time.monotonic()
        try:
            flow_class = load_flow_class(self.flow_type)
            if flow_class is None:
                return sink.close(
                    "failed", f"flow type {self.flow_type} is not available in this version"
                )
            with build_flow_context(self, sink, dry_run) as flow_context:
                report = operation(flow_class(flow_context))
        except BBVismaError as exc:
            self._note_setup_error(exc.cause_key, dry_run)
            return sink.close("failed", exc.message, cause_key=exc.cause_key)
        except Exception as exc:
            if not sink.closed:
                sink.close("failed", f"Unexpected error: {type(exc).__name__}: {exc}")
            raise
        finally:
            _logger.info(
                "apicenter flow %s (%s): %s in %.1fs",
                self.id,
                self.flow_type,
                what,
                time.monotonic() - started,
            )
        if report.aborted:
            self._note_setup_error(sink.abort_cause, dry_run)
            return sink.close("failed", report.aborted, cause_key=sink.abort_cause)
        return sink.close()

    def _runs_in_parallel(self, dry_run=False):
        """Whether a run of this flow is split into queue_job batches (sync/fanout.py); a dry
        run always runs here, so that its result can be shown at once."""
        self.ensure_one()
        return bool(self.parallel_batches and not dry_run and self.flow_type in PARALLEL_FLOW_TYPES)

    def _note_setup_error(self, cause_key, dry_run):
        """Credentials or settings are wrong: pause the integration's schedule."""
        if not dry_run and (cause_key or "").startswith(("auth:", "config:")):
            self.integration_id.state = "error"


class ApicenterFlowOpeningBalance(models.Model):
    """The stock a SKU had before the first document BuchhaltungsButler holds: the stock
    flow adds incoming and subtracts outgoing quantities from it."""

    _name = "apicenter.flow.opening.balance"
    _description = "APIcenter Opening Stock Balance"
    _order = "flow_id, sku"

    flow_id = fields.Many2one("apicenter.flow", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="flow_id.company_id", store=True, index=True)
    sku = fields.Char(string="SKU", required=True, help="Visma.net inventory number.")
    quantity = fields.Float(digits=(16, 4), required=True, default=0.0)
    note = fields.Char()

    _flow_sku_uniq = models.Constraint(
        "UNIQUE(flow_id, sku)", "A SKU can have only one opening balance per flow."
    )
