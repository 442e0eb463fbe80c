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
    ("first", "First non-empty"),
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
    code = fields.Char(
        required=True,
        help="Technical name; an 'For each item' rule names its child mapping by this code.",
    )
    active = fields.Boolean(default=True)
    flow_type = fields.Selection(FLOW_TYPES, help="Empty: usable by any flow type.")
    company_id = fields.Many2one("res.company", help="Empty: shared by all companies.")
    line_ids = fields.One2many("apicenter.mapping.line", "mapping_id", string="Rules", copy=True)
    note = fields.Text()

    _code_company_uniq = models.UniqueIndex(
        "(code, COALESCE(company_id, 0))", "A mapping code must be unique per company."
    )

    def _to_core(self, _seen=()):
        """This mapping as a ``bbvisma.mapper.Mapping`` (validated by the core: a wrong rule
        raises ConfigError naming every problem). Child mappings of 'For each item' rules are
        looked up by code and built the same way."""
        from bbvisma.errors import ConfigError
        from bbvisma.mapper import Mapping

        self.ensure_one()
        if self.code in _seen:
            raise ConfigError(f"mapping {self.code!r} contains itself through 'each' rules")
        children = {}
        for line in self.line_ids.filtered(lambda line: line.transform == "each"):
            child = self.search(
                [
                    ("code", "=", line.transform_arg),
                    ("company_id", "in", [self.company_id.id, False]),
                ],
                order="company_id",
                limit=1,
            )
            if child:
                children[child.code] = child._to_core(_seen=(*_seen, self.code))
        return Mapping.from_rows(self.code, self.line_ids._to_rows(), children)


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
    then = fields.Char(
        help="Further steps applied to the result, separated by ';', each 'transform:argument', "
        "e.g. 'strip; truncate:30'.",
    )
    required = fields.Boolean(help="Park the record when this rule yields no value.")
    note = fields.Char()

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
