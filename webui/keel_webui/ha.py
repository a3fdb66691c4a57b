"""The hosted engine's HA panel: where the engine VM runs, each host's HA
state and score, global maintenance; from the rows the engine worker copies
from the hosts' etcd (never etcd itself). The dashboard includes it and
polls this fragment. A host's page shows that host's own record the same
way (its section polls /hosts/<id>/ha)."""
from __future__ import annotations

from flask import render_template

from keel_engine.services import reads
from keel_engine.services.ha_host import LOCAL_MAINTENANCE_OFF, LOCAL_MAINTENANCE_ON, host_ha
from keel_engine.services.ha_view import overview

from .admin import admin_page
from .blueprint import ctx, reader, webui_bp


@webui_bp.route("/ha")
@admin_page
def ha_panel():
    return render_template("_ha_panel.html", ha=overview(reader()))


@webui_bp.app_template_global("host_ha")
def host_ha_of(host):
    """The host page's HA section reads through this, so that it is there
    on the first render too (without JavaScript)."""
    return host_ha(reader(), host)


@webui_bp.app_context_processor
def _local_maintenance_commands():
    return {"local_maintenance_on": LOCAL_MAINTENANCE_ON, "local_maintenance_off": LOCAL_MAINTENANCE_OFF}


@webui_bp.route("/hosts/<ident>/ha")
@admin_page
def host_ha_section(ident):
    h = reads.get_row(ctx(), reader(), reads.HOSTS, ident)
    return render_template("_ha_host.html", host=h)
