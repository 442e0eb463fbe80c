# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Mapping rules: how a canonical source record becomes a Visma.net payload.

The rules are data; :meth:`ApicenterMapping._to_core` turns them into the plain list the pure
mapper (``bbvisma.mapper``) applies.
"""

import importlib
import json

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools.translate import LazyTranslate

from .apicenter_flow import FLOW_TYPES

_lt = LazyTranslate(__name__)

#: labels of the core's transforms, translatable here; a transform the core (or a flow) adds
#: later still appears, with the core's English label (see _selection_transform)
TRANSFORM_LABELS = {
    "copy": _lt("Copy"),
    "constant": _lt("Constant"),
    "default": _lt("Default if empty"),
    "value_map": _lt("Value map"),
    "format": _lt("Format"),
    "date": _lt("Date"),
    "number": _lt("Number"),
    "truncate": _lt("Truncate"),
    "upper": _lt("Upper case"),
    "lower": _lt("Lower case"),
    "title": _lt("Title case"),
    "strip": _lt("Strip spaces"),
    "concat": _lt("Concatenate"),
    "first": _lt("First non-empty"),
    "split": _lt("Split"),
    "bool": _lt("Yes/No"),
    "each": _lt("For each item"),
    "country": _lt("Country code (ISO 3166 alpha-2)"),
}
WHEN = [("always", "Always"), ("create", "On create"), ("update", "On update")]


class ApicenterMapping(models.Model):
    _name = "apicenter.mapping"
    _description = "APIcenter Mapping"
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(
        required=True,
        help="Technical name; an 'For each item' rule names its child mapping by this code.",
    )
    active = fields.Boolean(default=True)
    flow_type = fields.Selection(FLOW_TYPES, help="Empty: usable by any flow type.")
    company_id = fields.Many2one("res.company", help="Empty: shared by all companies.")
    line_ids = fields.One2many("apicenter.mapping.line", "mapping_id", string="Rules", copy=True)
    note = fields.Text()

    test_source = fields.Text(
        string="Sample Record",
        help="A source record as JSON, the way the activity log shows what came from "
        "BuchhaltungsButler ('Load a sample' takes the latest one of this flow type).",
    )
    test_mode = fields.Selection(
        [("create", "As a create"), ("update", "As an update")],
        string="Test As",
        default="create",
        help="Rules marked 'On create' or 'On update' apply only in that mode.",
    )
    test_result = fields.Text(string="Payload", readonly=True)

    _code_company_uniq = models.UniqueIndex(
        "(code, COALESCE(company_id, 0))", "A mapping code must be unique per company."
    )

    def _to_core(self, _seen=()):
        """This mapping as a ``bbvisma.mapper.Mapping`` (validated by the core: a wrong rule
        raises ConfigError naming every problem).

        A 'For each item' rule names its child mapping by the rule's argument, e.g. ``lines``;
        the child is the mapping with code ``<this code>.lines`` (or, failing that, ``lines``),
        built the same way.
        """
        from bbvisma.errors import ConfigError
        from bbvisma.mapper import Mapping

        self.ensure_one()
        if self.code in _seen:
            raise ConfigError(f"mapping {self.code!r} contains itself through 'each' rules")
        children = {}
        for arg in set(
            self.line_ids.filtered(lambda r: r.transform == "each").mapped("transform_arg")
        ):
            child = self._find_by_code([f"{self.code}.{arg}", arg], self.company_id)
            if child:
                children[arg] = child._to_core(_seen=(*_seen, self.code))
        return Mapping.from_rows(self.code, self.line_ids._to_rows(), children)

    # -- test mapping --------------------------------------------------------------------------
    def action_load_sample(self):
        """Take the source record of the latest log line of this mapping's flow type."""
        self.ensure_one()
        if not self.flow_type:
            raise UserError(self.env._("Set the flow type of this mapping to load a sample."))
        line = self.env["apicenter.log"].search(
            [("flow_id.flow_type", "=", self.flow_type), ("source_payload", "!=", False)],
            order="id desc",
            limit=1,
        )
        if not line:
            raise UserError(
                self.env._(
                    "No run of a %(type)s flow has logged a source record yet.", type=self.flow_type
                )
            )
        self.test_source = line.source_payload
        return self.action_test_mapping()

    def action_test_mapping(self):
        """Show the payload the sample record produces with these rules and the value maps,
        or every problem found (unmapped values, empty required fields, wrong rules);
        sends nothing."""
        from bbvisma.errors import BBVismaError

        from ..sync.context import company_value_maps

        self.ensure_one()
        try:
            source = json.loads(self.test_source or "")
        except ValueError as exc:
            raise UserError(self.env._("The sample record is not valid JSON: %s", exc)) from None
        if not isinstance(source, dict):
            raise UserError(self.env._("The sample record must be a JSON object."))
        try:
            mapping = self._to_core()
        except BBVismaError as exc:
            raise UserError(exc.message) from None
        payload, problems = mapping.preview(
            source,
            mode=self.test_mode or "create",
            value_maps=company_value_maps(self.env, self.company_id or self.env.company),
        )
        text = json.dumps(payload, indent=2, ensure_ascii=False, default=str)
        if problems:
            text = "\n".join(["# " + problem for problem in problems] + ["", text])
        self.test_result = text
        return True

    @api.model
    def _find_by_code(self, codes, company):
        """The first mapping with one of ``codes`` (in that order), the company's before a
        shared one."""
        candidates = self.search([("code", "in", codes), ("company_id", "in", [company.id, False])])
        ranked = candidates.sorted(lambda m: (codes.index(m.code), not m.company_id))
        return ranked[:1]

    # -- the defaults of the core, as editable records --------------------------------------
    @api.model
    def _load_core_defaults(self):
        """Create the core's default mappings and value maps (bbvisma.flows.defaults) as
        records, once: a mapping or value map whose code exists already is left as it is, so
        a user's edits survive module updates. Called by data/apicenter_defaults.xml."""
        from bbvisma.flows.defaults import DEFAULTS_DIR, default_mapping_data, default_value_maps

        flow_types = dict(FLOW_TYPES)
        existing = set(
            self.with_context(active_test=False).search([("code", "!=", False)]).mapped("code")
        )
        for path in sorted(DEFAULTS_DIR.glob("*.json")):
            if path.stem == "value_maps":
                continue
            data = default_mapping_data(path.stem)
            parts = [(path.stem, data["rows"])] + [
                (f"{path.stem}.{child}", rows) for child, rows in sorted(data["children"].items())
            ]
            for code, rows in parts:
                if code in existing:
                    continue
                self.create(
                    {
                        "name": f"{data['name']} ({code})" if "." in code else data["name"],
                        "code": code,
                        "flow_type": path.stem if path.stem in flow_types else False,
                        "line_ids": [(0, 0, _line_vals(row)) for row in rows],
                    }
                )
        ValueMap = self.env["apicenter.value.map"]
        existing = set(
            ValueMap.with_context(active_test=False).search([("code", "!=", False)]).mapped("code")
        )
        for code, table in sorted(default_value_maps().items()):
            if code in existing:
                continue
            ValueMap.create(
                {
                    "name": code.replace("_", " ").capitalize(),
                    "code": code,
                    "line_ids": [
                        (0, 0, {"sequence": index, "source_value": source, "target_value": target})
                        for index, (source, target) in enumerate(table.items())
                    ],
                }
            )


def _line_vals(row):
    """A core rule row (``bbvisma.mapper.Rule`` keys) as mapping line values."""
    return {
        "sequence": int(row.get("sequence") or 0),
        "source_path": row.get("source") or False,
        "target_field": row.get("target"),
        "transform": row.get("transform") or "copy",
        "transform_arg": row.get("arg") or False,
        "then": row.get("then") or False,
        "when": row.get("when") or "always",
        "required": bool(row.get("required")),
        "note": row.get("note") or False,
    }


class ApicenterMappingLine(models.Model):
    _name = "apicenter.mapping.line"
    _description = "APIcenter Mapping Rule"
    _order = "mapping_id, sequence, id"

    mapping_id = fields.Many2one("apicenter.mapping", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="mapping_id.company_id", store=True)
    sequence = fields.Integer(default=10)
    source_path = fields.Char(help="Dotted path in the source record, e.g. buyer.address.city.")
    target_field = fields.Char(required=True, help="Dotted path in the Visma.net payload.")
    transform = fields.Selection("_selection_transform", default="copy", required=True)
    transform_arg = fields.Char(
        string="Argument",
        help="The transform's argument: the constant, the value map code, the format, "
        "the length, the separator...",
    )
    when = fields.Selection(WHEN, default="always", required=True)
    then = fields.Char(
        help="Further steps applied to the result, separated by ';', each 'transform:argument', "
        "e.g. 'strip; truncate:30'.",
    )
    required = fields.Boolean(help="Park the record when this rule yields no value.")
    note = fields.Char()

    @api.model
    def _selection_transform(self):
        """The transforms the core knows, flows' own included: one list, never out of step."""
        from bbvisma.mapper import transform_selection

        importlib.import_module("bbvisma.flows")  # flows register their own transforms

        return [
            (name, self.env._(TRANSFORM_LABELS[name]) if name in TRANSFORM_LABELS else label)
            for name, label in transform_selection()
        ]

    def _to_rows(self):
        """The rules as the plain rows ``bbvisma.mapper.Rule.from_row`` reads."""
        return [
            {
                "sequence": line.sequence,
                "source": line.source_path,
                "target": line.target_field,
                "transform": line.transform,
                "arg": line.transform_arg,
                "then": line.then,
                "when": line.when,
                "required": line.required,
                "note": line.note,
            }
            for line in self.sorted(lambda line: (line.sequence, line.id))
        ]
