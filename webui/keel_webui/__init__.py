"""The engine's web UI: an administration portal and a VM portal, rendered
on the server from the same service layer as the REST API. Views translate
forms into typed service calls and rows into pages; they decide nothing."""
from flask import Flask, redirect

from .blueprint import PREFIX, error_page, webui_bp

__all__ = ["PREFIX", "error_page", "register"]


def register(app: Flask) -> None:
    from . import admin, console, ha, inventory, portal, signin, users  # noqa: F401  (their routes)
    app.register_blueprint(webui_bp)

    # a browser pointed at the engine, or at oVirt's portal addresses, lands in the UI
    for path in ("/", "/ovirt-engine/", "/ovirt-engine/webadmin/", "/ovirt-engine/web-ui/"):
        app.add_url_rule(path, endpoint=f"to_ui{path.replace('/', '_')}",
                         view_func=lambda: redirect(PREFIX + "/", code=302))
