"""The hosted engine's HA panel: where the engine VM runs, each host's HA
state and score, global maintenance; from the rows the engine worker copies
from the hosts' etcd (never etcd itself). The dashboard includes it and
polls this fragment."""
from __future__ import annotations

from flask import render_template

from keel_engine.services.ha_view import overview

from .admin import admin_page
from .blueprint import reader, webui_bp


@webui_bp.route("/ha")
@admin_page
def ha_panel():
    return render_template("_ha_panel.html", ha=overview(reader()))
