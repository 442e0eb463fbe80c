"""bbvisma: the pure sync core of apicenter_bb_visma (BuchhaltungsButler -> Visma.net).

Never imports odoo. See ../shared/DESIGN.md for the split between this package and the addon.
"""

__version__ = "19.0.1.0.0"
