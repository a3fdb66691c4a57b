"""A VM's console in the browser: a one-time VNC password set on the VM's
display (the API's console ticket), and a proxy ticket that lets the
engine's console proxy relay this one display to the page's noVNC."""
from __future__ import annotations

from flask import current_app, render_template, request

from keel_engine import console_proxy
from keel_engine.errors import Fault
from keel_engine.models import Vm
from keel_engine.services import consoles, jobs, lookup

from .blueprint import ctx, session, webui_bp
from .signin import is_admin

# how long the page waits for the engine worker to set the password
TICKET_WAIT = 30.0


def proxy_url(cfg) -> str:
    if cfg.console_proxy_url:
        return cfg.console_proxy_url
    port = cfg.console_proxy_listen.rpartition(":")[2]
    return f"{'wss' if request.is_secure else 'ws'}://{request.host.rpartition(':')[0] or request.host}:{port}"


@webui_bp.route("/vms/<ident>/console", methods=["POST"])
def vm_console(ident):
    c, s = ctx(not is_admin()), session()
    app_ctx = current_app.config["KEEL_CTX"]
    vm = lookup.get(s, Vm, ident, "VM")
    job = consoles.request_ticket(c, s, vm, consoles.DEFAULT_EXPIRY)
    s.commit()     # the worker sees the job
    ended = jobs.wait(app_ctx.engine, job.id, TICKET_WAIT)
    if ended is None:
        raise Fault(504, "Gateway Timeout", f"the engine worker did not set the console ticket of VM {vm.name} "
                    f"within {TICKET_WAIT:.0f} s; is it running?")
    ticket = consoles.console(c, s, job)
    s.commit()     # the password leaves the job's row
    token = console_proxy.sign(console_proxy.secret_of(app_ctx.config), vm.id, ticket.address, ticket.port)
    page = render_template("console.html", vm=vm, url=f"{proxy_url(app_ctx.config)}/?token={token}",
                           password=ticket.password, valid_to=ticket.valid_to)
    # the page holds a password: never kept by a cache or the history
    return page, 200, {"Cache-Control": "no-store"}


@webui_bp.app_template_global()
def has_console(status: str) -> bool:
    return status in consoles.CONSOLE_STATES
