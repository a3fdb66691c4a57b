"""Hosts, their maintenance actions, fence agents and the fence action."""
from sqlalchemy import select

from ..errors import conflict, not_found
from ..models import Cluster, FenceAgent, Host
from ..services import hooks
from ..services import hosts as host_svc
from . import views
from .common import action_body, action_done, get, listing, removed
from .framework import body, ctx, follow_param, render, route, session


# ---- hosts -------------------------------------------------------------------
def _host_fields(s):
    clusters = {c.id: c.name for c in s.scalars(select(Cluster))}
    return lambda h: {"name": h.name, "status": h.status, "cluster": clusters.get(h.cluster_id),
                      "address": h.address}


@route("/hosts", ["GET"], "List hosts (search: name, status, cluster, address)")
def hosts_list():
    s = session()
    f = follow_param()
    return listing("hosts", "host", s.scalars(select(Host).order_by(Host.name)).all(),
                   lambda r: views.host(s, r, f), _host_fields(s), ("name", "status", "cluster", "address"))


@route("/hosts", ["POST"], "Add a host (checks its libvirt connection and capabilities)")
def hosts_add():
    s = session()
    return render("host", views.host(s, host_svc.add_host(ctx(), s, body())), 201)


@route("/hosts/<ident>", ["GET"], "Get a host")
def host_get(ident):
    s = session()
    return render("host", views.host(s, get(Host, ident, "host"), follow_param()))


@route("/hosts/<ident>", ["PUT"], "Update a host")
def host_update(ident):
    s = session()
    return render("host", views.host(s, host_svc.update_host(ctx(), s, get(Host, ident, "host"), body())))


@route("/hosts/<ident>", ["DELETE"], "Remove a host (in maintenance)")
def host_remove(ident):
    host_svc.remove_host(ctx(), session(), get(Host, ident, "host"))
    return removed()


def _after_host_change(host, old):
    """Commit first, then tell the power module (hooks see committed state)."""
    from flask import g
    from ..services import hooks
    if old is not None and old != host.status:
        g.session.commit()
        hooks.host_status_changed(ctx(), host, old, host.status)


@route("/hosts/<ident>/deactivate", ["POST"], "Put a host into maintenance (its VMs migrate away)")
def host_deactivate(ident):
    action_body()
    s = session()
    host, old = host_svc.deactivate(ctx(), s, get(Host, ident, "host"))
    _after_host_change(host, old)
    return action_done()


@route("/hosts/<ident>/activate", ["POST"], "Bring a host back from maintenance")
def host_activate(ident):
    action_body()
    s = session()
    host, old = host_svc.activate(ctx(), s, get(Host, ident, "host"))
    _after_host_change(host, old)
    return action_done()


@route("/hosts/<ident>/fence", ["POST"], "Fence a host through its power management")
def host_fence(ident):
    b = action_body()
    s = session()
    host = get(Host, ident, "host")
    result = host_svc.fence(ctx(), s, host, b.str("fence_type", required=True, maxlen=16))
    pm = result.get("power_management") or ({"status": result["power"]} if result.get("power") else None)
    return action_done({"power_management": pm} if pm else None)


@route("/hosts/<ident>/fenceagents", ["GET"], "List a host's fence agents")
def fence_agents_list(ident):
    s = session()
    host = get(Host, ident, "host")
    rows = s.scalars(select(FenceAgent).where(FenceAgent.host_id == host.id).order_by(FenceAgent.order)).all()
    return listing("agents", "agent", rows, lambda a: views.fence_agent(s, a), lambda a: {"name": a.address})


@route("/hosts/<ident>/fenceagents", ["POST"], "Add a fence agent (IPMI over LAN)")
def fence_agents_add(ident):
    s = session()
    host = get(Host, ident, "host")
    return render("agent", views.fence_agent(s, host_svc.add_fence_agent(ctx(), s, host, body())), 201)


def _agent(host_id, agent_id):
    a = session().get(FenceAgent, agent_id)
    if a is None or a.host_id != host_id:
        raise not_found("fence agent", agent_id)
    return a


@route("/hosts/<ident>/fenceagents/<agent>", ["GET"], "Get a fence agent")
def fence_agent_get(ident, agent):
    s = session()
    host = get(Host, ident, "host")
    return render("agent", views.fence_agent(s, _agent(host.id, agent)))


@route("/hosts/<ident>/fenceagents/<agent>", ["PUT"], "Update a fence agent")
def fence_agent_update(ident, agent):
    s = session()
    host = get(Host, ident, "host")
    a = host_svc.update_fence_agent(ctx(), s, host, _agent(host.id, agent), body())
    return render("agent", views.fence_agent(s, a))


@route("/hosts/<ident>/fenceagents/<agent>", ["DELETE"], "Remove a fence agent")
def fence_agent_remove(ident, agent):
    s = session()
    host = get(Host, ident, "host")
    host_svc.remove_fence_agent(ctx(), s, host, _agent(host.id, agent))
    return removed()


@route("/hosts/<ident>/fenceagents/<agent>/test", ["POST"],
       "Test a fence agent: the power status its BMC reports (status 'failed' with a fault if it cannot)")
def fence_agent_test(ident, agent):
    """oVirt UI's "Test" button. A BMC that refuses or does not answer is a
    normal answer (action status 'failed' with the reason), not an error."""
    action_body()
    s = session()
    host = get(Host, ident, "host")
    row = _agent(host.id, agent)
    tester = hooks.agent_tester()
    if tester is None:
        raise conflict("no power management configured (no fence handler installed)")
    return render("action", tester(ctx(), s, host, row.id))
