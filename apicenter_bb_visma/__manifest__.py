# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
{
    "name": "APIcenter: BuchhaltungsButler to Visma.net",
    "summary": "Sync customers, orders, products, stock, prices and shipments "
    "from BuchhaltungsButler to Visma.net ERP",
    "version": "19.0.1.0.0",
    "category": "Accounting/Accounting",
    "author": "APIcenter",
    "license": "LGPL-3",
    "depends": ["base", "mail", "queue_job"],
    # PyPI distribution names: Odoo 19 checks them with importlib.metadata
    "external_dependencies": {
        "python": ["bbvisma", "httpx", "pydantic", "tenacity", "factur-x", "lxml"],
    },
    "data": [
        "security/apicenter_security.xml",
        "security/ir.model.access.csv",
        "data/ir_cron_data.xml",
        "data/apicenter_defaults.xml",
        "data/apicenter_queue_job.xml",
        "views/apicenter_integration_views.xml",
        "views/apicenter_flow_views.xml",
        "views/apicenter_run_views.xml",
        "views/apicenter_log_views.xml",
        "views/apicenter_link_views.xml",
        "views/apicenter_mapping_views.xml",
        "views/apicenter_value_map_views.xml",
        "views/apicenter_menus.xml",
        "views/apicenter_document_views.xml",
        "views/apicenter_run_batch_views.xml",
        "security/apicenter_ops_security.xml",
        "data/apicenter_ops_data.xml",
        "views/apicenter_dashboard_views.xml",
        "views/apicenter_problem_views.xml",
        "views/apicenter_ops_views.xml",
        "wizards/apicenter_setup_views.xml",
    ],
    "demo": [
        "demo/apicenter_demo.xml",
    ],
    "application": True,
}
