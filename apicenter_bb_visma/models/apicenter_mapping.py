# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Mapping rules: how a canonical source record becomes a Visma.net payload.

The rules are data; :meth:`ApicenterMapping._to_core` turns them into the plain list the pure
mapper (``bbvisma.mapper``) applies.
"""

from odoo import fields, models

from .apicenter_flow import FLOW_TYPES

TRANSFORMS = [
    ("copy", "Copy"),
    ("constant", "Constant"),
    ("default", "Default if empty"),
    ("value_map", "Value map"),
    ("format", "Format"),
    ("date", "Date"),
    ("number", "Number"),
    ("truncate", "Truncate"),
    ("upper", "Upper case"),
    ("lower", "Lower case"),
    ("title", "Title case"),
    ("strip", "Strip spaces"),
    ("concat", "Concatenate"),
    ("split", "Split"),
    ("bool", "Yes/No"),
    ("each", "For each item"),
]
WHEN = [("always", "Always"), ("create", "On create"), ("update", "On update")]


class ApicenterMapping(models.Model):
    _name = "apicenter.mapping"
    _description = "APIcenter Mapping"
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    active = fields.Boolean(default=True)
    flow_type = fields.Selection(FLOW_TYPES, help="Empty: usable by any flow type.")
    company_id = fields.Many2one("res.company", help="Empty: shared by all companies.")
    line_ids = fields.One2many("apicenter.mapping.line", "mapping_id", string="Rules", copy=True)
    note = fields.Text()

    def _to_core(self):
        """The rules as plain dicts, in order, for the pure mapper."""
        self.ensure_one()
        return [
            {
                "source": line.source_path or None,
                "target": line.target_field,
                "transform": line.transform,
                "arg": line.transform_arg or None,
                "when": line.when,
                "required": line.required,
            }
            for line in self.line_ids.sorted(lambda line: (line.sequence, line.id))
        ]


class ApicenterMappingLine(models.Model):
    _name = "apicenter.mapping.line"
    _description = "APIcenter Mapping Rule"
    _order = "mapping_id, sequence, id"

    mapping_id = fields.Many2one("apicenter.mapping", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="mapping_id.company_id", store=True)
    sequence = fields.Integer(default=10)
    source_path = fields.Char(help="Dotted path in the source record, e.g. buyer.address.city.")
    target_field = fields.Char(required=True, help="Dotted path in the Visma.net payload.")
    transform = fields.Selection(TRANSFORMS, default="copy", required=True)
    transform_arg = fields.Char(
        string="Argument",
        help="The transform's argument: the constant, the value map code, the format, "
        "the length, the separator...",
    )
    when = fields.Selection(WHEN, default="always", required=True)
    required = fields.Boolean(help="Park the record when this rule yields no value.")
    note = fields.Char()
