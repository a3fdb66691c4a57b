"""Hosts, their maintenance actions, fence agents and the fence action."""
from ..errors import bad_request, not_found
from ..models import Cluster, FenceAgent, Host
from ..services import hosts as host_svc
from ..services import lookup, reads
from . import schemas, views
from .common import listing, obj, row
from .fields import required
from .framework import (action_answer, action_job, body, created, ctx, finish_job, follow_param, reader, removed,
                        render, route, session)


def _host_page(follow):
    s = reader()

    def page(rows):
        return {"vms": reads.vm_counts(s, [r.id for r in rows]),
                "fenced": reads.hosts_with_fence_agents(s, [r.id for r in rows]),
                "cluster": (reads.by_id(s, Cluster, [r.cluster_id for r in rows], ctx())
                            if "cluster" in follow else None)}
    return page


def _host_view(h, extra):
    return views.host(h, extra["vms"].get(h.id, 0),
                      extra["cluster"].get(h.cluster_id) if extra["cluster"] is not None else None,
                      power_managed=h.id in extra["fenced"])


def _host_now(ident, follow=()):
    h = row(reads.HOSTS, ident)
    return _host_view(h, _host_page(follow)([h]))


@route("/hosts", ["GET"], "List hosts (search: name, status, cluster, address, datacenter)",
       query=("search", "max", "case_sensitive", "follow"))
def hosts_list():
    return listing("hosts", "host", reads.HOSTS, _host_view, page=_host_page(follow_param()))


@route("/hosts", ["POST"], "Add a host (its libvirt connection and capabilities are checked by a job)",
       body=schemas.HOST, query=("async",), created=True, job=True)
def hosts_add():
    b = body(schemas.HOST)
    host, job = host_svc.add_host(ctx(), session(), host_svc.HostSpec(
        name=required(b, "name"), address=required(b, "address"), cluster=required(b, "cluster")))
    return created("host", job, lambda: views.host(host), lambda: _host_now(host.id))


@route("/hosts/<ident>", ["GET"], "Get a host", query=("follow",))
def host_get(ident):
    return render("host", _host_now(ident, follow_param()))


@route("/hosts/<ident>", ["PUT"], "Update a host (its name; address and cluster are fixed)", body=schemas.HOST)
def host_update(ident):
    b = body(schemas.HOST)
    if "address" in b or "cluster" in b:
        raise bad_request("address and cluster cannot be changed; remove and add the host again")
    host = host_svc.update_host(ctx(), session(), obj(Host, ident, "host"), name=b.get("name"))
    session().flush()
    return render("host", _host_now(host.id))


@route("/hosts/<ident>", ["DELETE"], "Remove a host (in maintenance)")
def host_remove(ident):
    host_svc.remove_host(ctx(), session(), obj(Host, ident, "host"))
    return removed()


@route("/hosts/<ident>/deactivate", ["POST"], "Put a host into maintenance (its VMs migrate away)",
       body=schemas.ACTION)
def host_deactivate(ident):
    body(schemas.ACTION)
    _host, job = host_svc.deactivate(ctx(), session(), obj(Host, ident, "host"))
    # like oVirt, answered at once: the host is preparing_for_maintenance while its VMs move
    return action_answer(job)


@route("/hosts/<ident>/activate", ["POST"], "Bring a host back from maintenance", body=schemas.ACTION,
       query=("async",), job=True)
def host_activate(ident):
    b = body(schemas.ACTION)
    return action_job(host_svc.request_activate(ctx(), session(), obj(Host, ident, "host")), b)


@route("/hosts/<ident>/fence", ["POST"], "Fence a host through its power management", body=schemas.FENCE,
       query=("async",), job=True)
def host_fence(ident):
    b = body(schemas.FENCE)
    job = host_svc.request_fence(ctx(), session(), obj(Host, ident, "host"), required(b, "fence_type"))

    def power(j):
        pm = (j.result or {}).get("power_management")
        return {"power_management": pm} if pm else None
    return action_job(job, b, power)


@route("/hosts/<ident>/fenceagents", ["GET"], "List a host's fence agents", query=("search", "max"))
def fence_agents_list(ident):
    host = row(reads.HOSTS, ident)
    return listing("agents", "agent", reads.FENCE_AGENTS, lambda a, _e: views.fence_agent(a),
                   FenceAgent.host_id == host.id)


def _agent_spec(b):
    opts = b.get("options")
    return host_svc.FenceAgentSpec(
        address=b.get("address"), username=b.get("username"), password=b.get("password"), port=b.get("port"),
        type=b.get("type"), order=b.get("order"), encrypt_options=b.get("encrypt_options"),
        options=None if opts is None else {o.get("name", ""): o.get("value", "") for o in opts})


@route("/hosts/<ident>/fenceagents", ["POST"], "Add a fence agent (IPMI over LAN)", body=schemas.FENCE_AGENT,
       created=True)
def fence_agents_add(ident):
    agent = host_svc.add_fence_agent(ctx(), session(), obj(Host, ident, "host"), _agent_spec(body(schemas.FENCE_AGENT)))
    return created("agent", None, lambda: views.fence_agent(agent), None)


def _agent(host_id, agent_id):
    a = session().get(FenceAgent, agent_id) if lookup.valid_uuid(agent_id) else None
    if a is None or a.host_id != host_id:
        raise not_found("fence agent", agent_id)
    return a


@route("/hosts/<ident>/fenceagents/<agent>", ["GET"], "Get a fence agent")
def fence_agent_get(ident, agent):
    return render("agent", views.fence_agent(row(reads.FENCE_AGENTS, agent, FenceAgent.host_id == row(reads.HOSTS, ident).id)))


@route("/hosts/<ident>/fenceagents/<agent>", ["PUT"], "Update a fence agent", body=schemas.FENCE_AGENT)
def fence_agent_update(ident, agent):
    host = obj(Host, ident, "host")
    a = host_svc.update_fence_agent(ctx(), session(), host, _agent(host.id, agent),
                                    _agent_spec(body(schemas.FENCE_AGENT)))
    return render("agent", views.fence_agent(a))


@route("/hosts/<ident>/fenceagents/<agent>", ["DELETE"], "Remove a fence agent")
def fence_agent_remove(ident, agent):
    host = obj(Host, ident, "host")
    host_svc.remove_fence_agent(ctx(), session(), host, _agent(host.id, agent))
    return removed()


@route("/hosts/<ident>/fenceagents/<agent>/test", ["POST"],
       "Test a fence agent: the power status its BMC reports (status 'failed' with a fault if it cannot)",
       body=schemas.ACTION, query=("async",), job=True)
def fence_agent_test(ident, agent):
    """oVirt UI's "Test" button. A BMC that refuses or does not answer is a
    normal answer (action status 'failed' with the reason), not an error."""
    b = body(schemas.ACTION)
    host = obj(Host, ident, "host")
    job = host_svc.request_agent_test(ctx(), session(), host, _agent(host.id, agent))
    return finish_job(job, lambda j: render("action", dict(j.result or {})),
                      lambda j: action_answer(j, status=202, state="pending"), b)
