# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The setup assistant: from two sets of credentials to running flows, step by step.

Steps: BuchhaltungsButler credentials (tested with a real call) -> Visma.net credentials
(token + one read) -> which flows -> each chosen flow's questions, with the choices read live
from Visma.net (branches, order types, credit terms, payment methods, carriers, warehouses,
item classes) -> review -> the integration, its flows, value maps and scheduled actions.

Why a stored model and not a TransientModel: leaving in the middle must lose nothing. The
assistant is an ordinary record (transient ones are vacuumed after an hour) and the credentials
are written straight into a draft integration (related fields), so they are stored once, with
the integration's access rules; the menu reopens the user's unfinished assistant at its step.

Why a failed connection test does not raise: raising would roll the transaction back, and the
user would lose the test result. The result is stored on the assistant and shown in the step.
"""

from markupsafe import Markup

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..models.apicenter_integration import (
    BB_DEFAULT_URL,
    VISMA_DEFAULT_TOKEN_URL,
    VISMA_DEFAULT_URL,
)

STEPS = [
    ("bb", "BuchhaltungsButler"),
    ("visma", "Visma.net"),
    ("flows", "Flows"),
    ("questions", "Settings"),
    ("review", "Review"),
    ("done", "Done"),
]
STEP_ORDER = [step for step, _label in STEPS]
TEST_STATES = [("untested", "Not tested"), ("ok", "Connected"), ("failed", "Failed")]
FLOW_FIELDS = {
    "customers": "flow_customers",
    "orders": "flow_orders",
    "products": "flow_products",
    "stock": "flow_stock",
    "prices": "flow_prices",
    "shipments": "flow_shipments",
}
#: integration field -> assistant field (related, editable): the credentials live only there
BB_FIELDS = ("bb_base_url", "bb_api_client", "bb_api_secret", "bb_api_key")
VISMA_FIELDS = (
    "visma_base_url",
    "visma_token_url",
    "visma_client_id",
    "visma_client_secret",
    "visma_tenant_id",
    "visma_company_id",
)
#: choice kind -> (VismaClient method, key field, label field, flows that need it; None: all)
CHOICE_SOURCES = {
    "branch": ("list_branches", "number", "name", None),
    "order_type": ("list_sales_order_types", "orderType", "description", {"orders"}),
    "credit_term": ("list_credit_terms", "termsId", "description", {"customers"}),
    "payment_method": ("list_payment_methods", "paymentMethodID", "description", {"customers"}),
    "item_class": ("list_item_classes", "id", "description", {"products"}),
    "warehouse": ("list_warehouses", "warehouseID", "description", {"stock"}),
    "carrier": ("list_carriers", "carrierId", "carrierDescription", {"shipments"}),
}
CHOICE_KINDS = [
    ("branch", "Branch"),
    ("order_type", "Order type"),
    ("credit_term", "Credit terms"),
    ("payment_method", "Payment method"),
    ("item_class", "Item class"),
    ("warehouse", "Warehouse"),
    ("carrier", "Carrier"),
]


def _flow_selection(field_name):
    """The selection of a flow setting, so the assistant asks with the flow's own choices."""

    def selection(self):
        return self.env["apicenter.flow"]._fields[field_name]._description_selection(self.env)

    return selection


def _flow_default(field_name):
    """The flow's own default of a setting: the assistant proposes what a new flow would do."""

    def default(self):
        return self.env["apicenter.flow"].default_get([field_name]).get(field_name)

    return default


class ApicenterSetupChoice(models.Model):
    """One value Visma.net listed for a question (a warehouse, a carrier...), read live."""

    _name = "apicenter.setup.choice"
    _description = "APIcenter Setup Choice"
    _order = "kind, code"
    _rec_names_search = ["code", "name"]

    setup_id = fields.Many2one(
        "apicenter.setup", string="Setup Assistant", required=True, ondelete="cascade", index=True
    )
    kind = fields.Selection(CHOICE_KINDS, required=True)
    code = fields.Char(required=True)
    name = fields.Char()

    @api.depends("code", "name")
    def _compute_display_name(self):
        for choice in self:
            choice.display_name = f"{choice.code} - {choice.name}" if choice.name else choice.code


class ApicenterSetup(models.Model):
    _name = "apicenter.setup"
    _description = "APIcenter Setup Assistant"
    _order = "id desc"

    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", readonly=True, index=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True)
    name = fields.Char(
        related="integration_id.name",
        readonly=False,
        required=True,
        default=lambda self: self.env._("BuchhaltungsButler to Visma.net"),
    )
    step = fields.Selection(STEPS, required=True, default="bb")
    # -- 1. BuchhaltungsButler --------------------------------------------------------------
    bb_base_url = fields.Char(
        related="integration_id.bb_base_url", readonly=False, default=BB_DEFAULT_URL
    )
    bb_api_client = fields.Char(related="integration_id.bb_api_client", readonly=False)
    bb_api_secret = fields.Char(related="integration_id.bb_api_secret", readonly=False)
    bb_api_key = fields.Char(related="integration_id.bb_api_key", readonly=False)
    bb_test_state = fields.Selection(
        TEST_STATES, string="BuchhaltungsButler Test", default="untested", required=True
    )
    bb_test_message = fields.Text(string="BuchhaltungsButler Test Result", readonly=True)
    # -- 2. Visma.net -----------------------------------------------------------------------
    visma_base_url = fields.Char(
        related="integration_id.visma_base_url", readonly=False, default=VISMA_DEFAULT_URL
    )
    visma_token_url = fields.Char(
        related="integration_id.visma_token_url", readonly=False, default=VISMA_DEFAULT_TOKEN_URL
    )
    visma_client_id = fields.Char(related="integration_id.visma_client_id", readonly=False)
    visma_client_secret = fields.Char(related="integration_id.visma_client_secret", readonly=False)
    visma_tenant_id = fields.Char(related="integration_id.visma_tenant_id", readonly=False)
    visma_company_id = fields.Char(related="integration_id.visma_company_id", readonly=False)
    visma_test_state = fields.Selection(
        TEST_STATES, string="Visma.net Test", default="untested", required=True
    )
    visma_test_message = fields.Text(string="Visma.net Test Result", readonly=True)
    # -- 3. flows -----------------------------------------------------------------------------
    flow_customers = fields.Boolean(string="Customers", default=True)
    flow_orders = fields.Boolean(string="Orders", default=True)
    flow_products = fields.Boolean(string="Products")
    flow_stock = fields.Boolean(string="Stock")
    flow_prices = fields.Boolean(string="Prices")
    flow_shipments = fields.Boolean(string="Shipments")
    interval_number = fields.Integer(
        string="Run Every", default=_flow_default("interval_number"), required=True
    )
    interval_type = fields.Selection(
        _flow_selection("interval_type"),
        string="Interval Unit",
        default=_flow_default("interval_type"),
        required=True,
    )
    # -- 4. questions (choices read live from Visma.net) --------------------------------------
    choice_ids = fields.One2many("apicenter.setup.choice", "setup_id", string="Choices")
    choices_date = fields.Datetime(string="Choices Read At", readonly=True)
    choices_message = fields.Text(string="Problems Reading the Choices", readonly=True)
    branch_choice_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Branch",
        domain="[('setup_id', '=', id), ('kind', '=', 'branch')]",
    )
    company_rule = fields.Selection(
        _flow_selection("company_rule"), default=_flow_default("company_rule")
    )
    match_by_email = fields.Boolean(
        string="Match Existing Customers by E-mail", default=_flow_default("match_by_email")
    )
    credit_terms_company_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Credit Terms for Companies",
        domain="[('setup_id', '=', id), ('kind', '=', 'credit_term')]",
    )
    credit_terms_person_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Credit Terms for Persons",
        domain="[('setup_id', '=', id), ('kind', '=', 'credit_term')]",
    )
    payment_method_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Default Payment Method",
        domain="[('setup_id', '=', id), ('kind', '=', 'payment_method')]",
    )
    order_target = fields.Selection(
        _flow_selection("order_target"), default=_flow_default("order_target")
    )
    order_type_id = fields.Many2one(
        "apicenter.setup.choice",
        domain="[('setup_id', '=', id), ('kind', '=', 'order_type')]",
    )
    status_filter = fields.Selection(
        _flow_selection("status_filter"), default=_flow_default("status_filter")
    )
    use_default_debtor = fields.Boolean(
        help="Book documents without a known customer on one default customer."
    )
    default_customer_number = fields.Char()
    missing_sku_policy = fields.Selection(
        _flow_selection("missing_sku_policy"),
        string="Unknown SKU",
        default=_flow_default("missing_sku_policy"),
    )
    fallback_item = fields.Char(
        default=_flow_default("fallback_item"),
        help="Visma.net item for lines without a seller-assigned id (services, free text).",
    )
    update_product_info = fields.Boolean(
        string="Update Product Information",
        default=_flow_default("update_product_info"),
        help="Also update description and attributes of items that exist already.",
    )
    item_class_goods_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Item Class for Goods",
        domain="[('setup_id', '=', id), ('kind', '=', 'item_class')]",
    )
    item_class_service_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Item Class for Services",
        domain="[('setup_id', '=', id), ('kind', '=', 'item_class')]",
    )
    stock_mode = fields.Selection(
        _flow_selection("stock_mode"), default=_flow_default("stock_mode")
    )
    warehouse_id = fields.Many2one(
        "apicenter.setup.choice",
        domain="[('setup_id', '=', id), ('kind', '=', 'warehouse')]",
    )
    carrier_id = fields.Many2one(
        "apicenter.setup.choice",
        string="Default Carrier",
        domain="[('setup_id', '=', id), ('kind', '=', 'carrier')]",
    )
    # -- 5. review ----------------------------------------------------------------------------
    activate = fields.Boolean(
        string="Start the Schedule",
        default=True,
        help="Activate the integration at the end: the flows then run on their schedule. "
        "Otherwise it stays a draft whose flows run only on demand.",
    )
    review_html = fields.Html(string="Review", compute="_compute_review_html", sanitize=False)

    # -- creating and editing -----------------------------------------------------------------
    @api.model_create_multi
    def create(self, vals_list):
        """Each assistant starts with a draft integration holding what the user enters."""
        for vals in vals_list:
            if vals.get("integration_id"):
                continue
            # copied, not popped: the related fields write the same values once more, and a
            # default Odoo would add for a missing one cannot overwrite the user's
            integration_vals = {
                name: vals[name] for name in ("name", *BB_FIELDS, *VISMA_FIELDS) if name in vals
            }
            integration_vals.setdefault("name", self.env._("BuchhaltungsButler to Visma.net"))
            integration_vals["state"] = "draft"
            integration = self.env["apicenter.integration"].create(integration_vals)
            vals["integration_id"] = integration.id
        return super().create(vals_list)

    def write(self, vals):
        """Changed credentials must be tested again."""
        if set(BB_FIELDS) & set(vals) and "bb_test_state" not in vals:
            vals = dict(vals, bb_test_state="untested", bb_test_message=False)
        if set(VISMA_FIELDS) & set(vals) and "visma_test_state" not in vals:
            vals = dict(vals, visma_test_state="untested", visma_test_message=False)
        return super().write(vals)

    # -- navigation ---------------------------------------------------------------------------
    @api.model
    def action_open_assistant(self):
        """The menu: the user's unfinished assistant where they left it, else a new one."""
        setup = self.search(
            [("create_uid", "=", self.env.uid), ("step", "!=", "done")], limit=1, order="id desc"
        )
        if setup:
            return setup._action_open()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Setup Assistant"),
            "res_model": self._name,
            "view_mode": "form",
            "target": "current",
        }

    def _action_open(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Setup Assistant"),
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "current",
        }

    def chosen_flow_types(self):
        self.ensure_one()
        return [flow_type for flow_type, name in FLOW_FIELDS.items() if self[name]]

    def action_back(self):
        for setup in self:
            index = STEP_ORDER.index(setup.step)
            if 0 < index < len(STEP_ORDER) - 1:
                setup.step = STEP_ORDER[index - 1]
        return self[:1]._action_open()

    def action_next(self):
        """Check the current step and go to the next one; a failed test keeps the step."""
        self.ensure_one()
        handler = getattr(self, f"_leave_{self.step}")
        if handler():
            self.step = STEP_ORDER[STEP_ORDER.index(self.step) + 1]
        return self._action_open()

    def _leave_bb(self):
        if self.bb_test_state != "ok":
            self._test("bb")
        return self.bb_test_state == "ok"

    def _leave_visma(self):
        if self.visma_test_state != "ok":
            self._test("visma")
        return self.visma_test_state == "ok"

    def _leave_flows(self):
        if not self.chosen_flow_types():
            raise UserError(self.env._("Choose at least one flow."))
        if self.interval_number <= 0:
            raise UserError(self.env._("The interval must be a positive number."))
        self._load_choices()
        return True

    def _leave_questions(self):
        missing = []
        flow_types = self.chosen_flow_types()
        if "orders" in flow_types:
            if self.order_target == "sales_order" and not self.order_type_id:
                missing.append(self.env._("the order type"))
            if self.use_default_debtor and not self.default_customer_number:
                missing.append(self.env._("the default customer number"))
        if "stock" in flow_types and self.stock_mode != "unmanaged" and not self.warehouse_id:
            missing.append(self.env._("the warehouse"))
        if missing:
            raise UserError(self.env._("Please answer: %(missing)s.", missing=", ".join(missing)))
        return True

    def _leave_review(self):
        self._apply()
        return True

    # -- connection tests ---------------------------------------------------------------------
    def action_test_bb(self):
        self.ensure_one()
        self._test("bb")
        return self._action_open()

    def action_test_visma(self):
        self.ensure_one()
        self._test("visma")
        return self._action_open()

    def _test(self, system):
        """One real call through the integration's client; the outcome in plain words.

        BuchhaltungsButler: the first debtor. Visma.net: a token, then the branches.
        """
        from bbvisma.errors import BBVismaError

        self.ensure_one()
        integration = self.integration_id
        client = None
        try:
            client = integration._get_client(system)
            result = client.check_connection()
        except BBVismaError as exc:
            state, message = "failed", _plain_error(self.env, system, exc)
        else:
            state, message = "ok", _plain_success(self.env, system, result)
        finally:
            close = getattr(client, "close", None)
            if close:
                close()
        message = integration._redact_text(message)
        self.write({f"{system}_test_state": state, f"{system}_test_message": message})
        return state == "ok"

    # -- live choices -------------------------------------------------------------------------
    def action_reload_choices(self):
        self.ensure_one()
        self._load_choices()
        return self._action_open()

    def _load_choices(self):
        """Read the lists the chosen flows ask about from Visma.net and keep the answers given.

        A list Visma.net refuses leaves the others usable; the refusal is shown in the step.
        """
        from bbvisma.errors import BBVismaError

        self.ensure_one()
        flow_types = set(self.chosen_flow_types())
        kinds = [
            kind
            for kind, (_method, _key, _label, needed_by) in CHOICE_SOURCES.items()
            if needed_by is None or needed_by & flow_types
        ]
        answers = {
            name: (self[name].kind, self[name].code)
            for name, field in self._fields.items()
            if field.type == "many2one"
            and field.comodel_name == "apicenter.setup.choice"
            and self[name]
        }
        problems = []
        rows = []
        try:
            client = self.integration_id._get_client("visma")
        except BBVismaError as exc:
            self.choices_message = self.integration_id._redact_text(
                _plain_error(self.env, "visma", exc)
            )
            return
        try:
            for kind in kinds:
                method, key, label, _needed_by = CHOICE_SOURCES[kind]
                try:
                    records = getattr(client, method)()
                except BBVismaError as exc:
                    problems.append(_plain_error(self.env, "visma", exc))
                    continue
                for record in records:
                    if not isinstance(record, dict) or record.get(key) in (None, ""):
                        continue
                    if record.get("active") is False or record.get("isActive") is False:
                        continue
                    rows.append(
                        {
                            "setup_id": self.id,
                            "kind": kind,
                            "code": str(record[key]),
                            "name": record.get(label) or record.get("name") or False,
                        }
                    )
        finally:
            close = getattr(client, "close", None)
            if close:
                close()
        self.choice_ids.unlink()
        choices = self.env["apicenter.setup.choice"].create(rows)
        vals = {
            "choices_date": fields.Datetime.now(),
            "choices_message": self.integration_id._redact_text("\n".join(problems)) or False,
        }
        for name, (kind, code) in answers.items():
            vals[name] = choices.filtered(lambda c, k=kind, v=code: c.kind == k and c.code == v)[
                :1
            ].id
        self._default_answers(choices, vals)
        self.write(vals)

    def _default_answers(self, choices, vals):
        """Preselect what the core's defaults would use, when Visma.net lists it."""
        from bbvisma.flows.defaults import default_value_maps

        integration = self.integration_id
        maps = default_value_maps()
        terms = maps.get("customer_credit_terms", {})
        classes = maps.get("item_classes", {})
        defaults = {
            "branch_choice_id": ("branch", integration.visma_branch or None),
            "credit_terms_company_id": ("credit_term", terms.get("company")),
            "credit_terms_person_id": ("credit_term", terms.get("person")),
            "payment_method_id": (
                "payment_method",
                maps.get("customer_payment_methods", {}).get("none"),
            ),
            "item_class_goods_id": ("item_class", classes.get("goods")),
            "item_class_service_id": ("item_class", classes.get("service")),
            "order_type_id": ("order_type", "SO"),
        }
        for name, (kind, code) in defaults.items():
            if vals.get(name):
                continue
            of_kind = choices.filtered(lambda c, k=kind: c.kind == k)
            match = of_kind.filtered(lambda c, v=code: c.code == v)[:1]
            if name == "branch_choice_id" and not match:
                match = of_kind[:1]
            if match:
                vals[name] = match.id

    # -- review and apply ---------------------------------------------------------------------
    @api.depends(
        "name",
        "step",
        "interval_number",
        "interval_type",
        "activate",
        *FLOW_FIELDS.values(),
        "branch_choice_id",
        "warehouse_id",
        "carrier_id",
        "order_type_id",
    )
    def _compute_review_html(self):
        for setup in self:
            items = [
                (self.env._("Integration"), setup.name),
                (self.env._("Visma.net company"), setup.integration_id.visma_company_id),
                (self.env._("Branch"), setup.branch_choice_id.display_name),
                (
                    self.env._("Schedule"),
                    self.env._(
                        "every %(number)s %(unit)s",
                        number=setup.interval_number,
                        unit=dict(
                            setup._fields["interval_type"]._description_selection(self.env)
                        ).get(setup.interval_type, ""),
                    ),
                ),
            ]
            flow_type_field = self.env["apicenter.flow"]._fields["flow_type"]
            flow_labels = dict(flow_type_field._description_selection(self.env))
            for flow_type in setup.chosen_flow_types():
                label = flow_labels[flow_type] + setup._flow_summary(flow_type)
                items.append((self.env._("Flow"), label))
            rows = Markup("").join(
                Markup("<tr><th>%s</th><td>%s</td></tr>") % (label, value or "-")
                for label, value in items
            )
            setup.review_html = Markup('<table class="table table-sm">%s</table>') % rows

    def _flow_summary(self, flow_type):
        details = {
            "orders": [self.order_type_id.code if self.order_target == "sales_order" else None],
            "stock": [self.warehouse_id.code],
            "shipments": [self.carrier_id.code],
            "products": [self.item_class_goods_id.code, self.item_class_service_id.code],
            "customers": [self.credit_terms_company_id.code, self.payment_method_id.code],
        }.get(flow_type, [])
        shown = [detail for detail in details if detail]
        return f" ({', '.join(shown)})" if shown else ""

    def action_apply(self):
        self.ensure_one()
        if self.step != "review":
            raise UserError(self.env._("Review the settings before creating the flows."))
        return self.action_next()

    def _apply(self):
        """Create the flows (their scheduled actions come with them), set the value maps the
        answers touch for the integration's company, and activate if asked."""
        self.ensure_one()
        integration = self.integration_id
        if self.bb_test_state != "ok" or self.visma_test_state != "ok":
            raise UserError(self.env._("Both connections must be tested successfully first."))
        integration.visma_branch = self.branch_choice_id.code or integration.visma_branch
        self._apply_value_maps()
        Flow = self.env["apicenter.flow"]
        Mapping = self.env["apicenter.mapping"]
        labels = dict(Flow._fields["flow_type"]._description_selection(self.env))
        existing = set(integration.with_context(active_test=False).flow_ids.mapped("flow_type"))
        vals_list = []
        for sequence, flow_type in enumerate(self.chosen_flow_types(), start=1):
            if flow_type in existing:
                continue  # applied before (the user came back): never two flows of a type
            vals = {
                "name": labels[flow_type],
                "sequence": sequence * 10,
                "integration_id": integration.id,
                "flow_type": flow_type,
                "interval_number": self.interval_number,
                "interval_type": self.interval_type,
                "mapping_id": Mapping._find_by_code([flow_type], integration.company_id).id,
            }
            vals.update(self._flow_settings(flow_type))
            vals_list.append(vals)
        flows = Flow.create(vals_list)
        if self.activate:
            integration.action_activate()
        integration.message_post(
            body=self.env._(
                "Set up with the assistant: %(count)s flow(s) created.", count=len(flows)
            )
        )
        return flows

    def _flow_settings(self, flow_type):
        if flow_type == "customers":
            return {"company_rule": self.company_rule, "match_by_email": self.match_by_email}
        if flow_type == "orders":
            return {
                "order_target": self.order_target,
                "visma_order_type": self.order_type_id.code or "SO",
                "status_filter": self.status_filter,
                "use_default_debtor": self.use_default_debtor,
                "default_customer_number": self.default_customer_number,
                "missing_sku_policy": self.missing_sku_policy,
                "fallback_item": self.fallback_item,
            }
        if flow_type == "products":
            return {"update_product_info": self.update_product_info}
        if flow_type == "stock":
            return {"stock_mode": self.stock_mode, "warehouse_id_visma": self.warehouse_id.code}
        if flow_type == "shipments":
            return {"default_carrier": self.carrier_id.code}
        return {}

    def _apply_value_maps(self):
        """The answers that live in value maps: the company's own table of each code, started
        from the table in force (core default, then shared record) so nothing else changes."""
        from bbvisma.flows.defaults import default_value_maps

        flow_types = set(self.chosen_flow_types())
        changes = {}
        if "customers" in flow_types:
            terms = {
                "company": self.credit_terms_company_id.code,
                "person": self.credit_terms_person_id.code,
            }
            changes["customer_credit_terms"] = {k: v for k, v in terms.items() if v}
            if self.payment_method_id:
                changes["customer_payment_methods"] = {"*": self.payment_method_id.code}
        if "products" in flow_types:
            classes = {
                "goods": self.item_class_goods_id.code,
                "service": self.item_class_service_id.code,
            }
            changes["item_classes"] = {k: v for k, v in classes.items() if v}
        company = self.integration_id.company_id
        ValueMap = self.env["apicenter.value.map"]
        core = default_value_maps()
        for code, new_values in changes.items():
            if not new_values:
                continue
            shared = ValueMap.search([("code", "=", code), ("company_id", "=", False)], limit=1)
            own = ValueMap.search([("code", "=", code), ("company_id", "=", company.id)], limit=1)
            table = dict(core.get(code, {}))
            table.update(shared._to_core().get(code, {}) if shared else {})
            table.update(own._to_core().get(code, {}) if own else {})
            if code == "customer_payment_methods":
                # one default method for every payment profile the map knows
                table = {key: new_values["*"] for key in table} or dict(new_values)
            else:
                table.update(new_values)
            if not own:
                own = ValueMap.create(
                    {
                        "name": shared.name or code,
                        "code": code,
                        "company_id": company.id,
                        "note": self.env._("Written by the setup assistant."),
                    }
                )
            own.line_ids.unlink()
            own.line_ids = [
                fields.Command.create(
                    {"sequence": index, "source_value": key, "target_value": value}
                )
                for index, (key, value) in enumerate(table.items(), start=1)
            ]

    def action_open_integration(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "apicenter.integration",
            "res_id": self.integration_id.id,
            "view_mode": "form",
            "target": "current",
        }


# -- plain words -------------------------------------------------------------------------------
def _plain_error(env, system, exc):
    """What went wrong, first in the user's words, then the API's own (already redacted)."""
    from bbvisma.errors import (
        AuthError,
        ConfigError,
        ConnectionFailed,
        RateLimited,
        RequestTimeout,
        TransientError,
    )

    code = str(exc.code) if exc.code is not None else ""
    if isinstance(exc, RateLimited):
        headline = env._(
            "Quota reached: the API refuses more requests for now; wait a minute and test again."
        )
    elif isinstance(exc, AuthError):
        # keys as "system:code" text: a tuple after a env._() call confuses Odoo's term extractor
        headline = {
            "bb:3": env._("Unknown credentials: check the API client and the API secret."),
            "bb:4": env._("Unknown API key: no BuchhaltungsButler company answers to this key."),
            "bb:11": env._(
                "Inactive customer: the BuchhaltungsButler company of this API key is not active."
            ),
            "visma:invalid_client": env._(
                "Unknown credentials: check the client ID and the client secret."
            ),
            "visma:12027": env._("No licence: check the tenant ID."),
            "visma:12002": env._("Wrong company: check the company ID against the tenant ID."),
        }.get(f"{system}:{code}") or env._("Access refused.")
    elif isinstance(exc, ConfigError):
        headline = env._("Setting missing or wrong.")
    elif isinstance(exc, (ConnectionFailed, RequestTimeout)):
        headline = env._("Not reachable: check the address and the network.")
    elif isinstance(exc, TransientError):
        headline = env._("The service did not answer properly; try again later.")
    else:
        headline = env._("The test failed.")
    return f"{headline}\n{exc.message}"


def _plain_success(env, system, result):
    result = result if isinstance(result, dict) else {}
    if system == "bb":
        return env._("Connected to BuchhaltungsButler.")
    return env._(
        "Connected to Visma.net company %(company)s (branches: %(branches)s).",
        company=result.get("company_name") or result.get("company_id") or "",
        branches=", ".join(str(b) for b in result.get("branches") or []) or "-",
    )
