"""The sub-collections oVirt's clients read on every VM, template, host and
vNIC profile. Where Keel has the facts they are shown (a host's memory, a
VM's configured memory and CPUs); where Keel has no such device or feature
(NUMA nodes, watchdogs, host devices, guest sessions) the answer is oVirt's
empty collection, never a 404, so clients that list them before deciding
work unchanged. Writes to them are refused with a 400 that says so."""
from flask import current_app

from ..errors import bad_request, not_found
from ..models import Vm
from ..representation import Many
from ..services import consoles, jobs, reads
from . import schemas, views
from .common import obj, row
from .fields import get
from .framework import body, ctx, reader, render, route, session
from .vms import _nic

# (path, collection tag, item tag, what Keel lacks): empty answers
EMPTY_VM_COLLECTIONS = (
    ("numanodes", "vm_numa_nodes", "vm_numa_node", "virtual NUMA nodes"),
    ("watchdogs", "watchdogs", "watchdog", "watchdog devices"),
    ("hostdevices", "host_devices", "host_device", "host device passthrough"),
    ("sessions", "sessions", "session", "guest sessions (they need oVirt's guest agent)"),
    ("applications", "applications", "application", "applications reported by a guest agent"),
    ("affinitylabels", "affinity_labels", "affinity_label", "affinity labels"),
    ("tags", "tags", "tag", "tags"),
)


def _empty_list(path, tag, item, what):
    def listing(ident):
        row(reads.VMS, ident)     # 404 for an unknown (or hidden) VM
        return render(tag, Many(item, []))

    def refuse(ident):
        row(reads.VMS, ident)
        raise bad_request(f"{path}: {what} are not supported yet")
    listing.__name__, refuse.__name__ = f"vm_{path}_list", f"vm_{path}_add"
    route(f"/vms/<ident>/{path}", ["GET"], f"A VM's {what}: always empty in Keel")(listing)
    route(f"/vms/<ident>/{path}", ["POST"], f"Refused: {what} are not supported yet")(refuse)


for _entry in EMPTY_VM_COLLECTIONS:
    _empty_list(*_entry)


# ovirt_nic compares a NIC's network filter parameters with the ones it is given
@route("/vms/<ident>/nics/<nic>/networkfilterparameters", ["GET"],
       "A NIC's network filter parameters: always empty in Keel (no network filters)")
def vm_nic_filter_parameters(ident, nic):
    _nic(row(reads.VMS, ident).id, nic)     # 404 for an unknown NIC of this VM
    return render("network_filter_parameters", Many("network_filter_parameter", []))


@route("/vms/<ident>/nics/<nic>/networkfilterparameters", ["POST"],
       "Refused: network filters are not supported yet")
def vm_nic_filter_parameters_add(ident, nic):
    row(reads.VMS, ident)
    raise bad_request("network_filter_parameter: network filters are not supported yet")


def _stat(vm_or_host_kind, owner_id, name, description, unit, value, kind="gauge", type_="integer"):
    return {"id": name, "name": name, "description": description, "kind": kind, "type": type_, "unit": unit,
            "values": Many("value", [{"datum": value}]),
            vm_or_host_kind: views.ref(f"{vm_or_host_kind}s", owner_id)}


@route("/vms/<ident>/statistics", ["GET"], "A VM's statistics (the configured memory and CPUs)")
def vm_statistics(ident):
    v = row(reads.VMS, ident)
    stats = [_stat("vm", v.id, "memory.installed", "Total memory configured", "bytes", v.memory),
             _stat("vm", v.id, "cpu.current.total", "Number of virtual CPUs", "none", v.cpus)]
    return render("statistics", Many("statistic", stats))


# a VM's CD-ROM: api/cdroms.py


# ---- the VNC console (services/consoles.py) ----------------------------------------------
def _console_view(v):
    address, port = consoles.display(reader(), v)
    out = {"id": consoles.CONSOLE_ID, "href": views.href("vms", v.id, "graphicsconsoles", consoles.CONSOLE_ID),
           "protocol": "vnc", "vm": views.ref("vms", v.id)}
    if address:
        out["address"] = address
    if port:
        out["port"] = port
    return out


def _console_id(console):
    if console != consoles.CONSOLE_ID:
        raise not_found("graphics console", console)


@route("/vms/<ident>/graphicsconsoles", ["GET"], "A VM's graphics console: VNC on its host's address while it "
       "runs (the port once a ticket was set)")
def vm_graphics_consoles(ident):
    return render("graphics_consoles", Many("graphics_console", [_console_view(row(reads.VMS, ident))]))


@route("/vms/<ident>/graphicsconsoles/<console>", ["GET"], "A VM's graphics console")
def vm_graphics_console(ident, console):
    v = row(reads.VMS, ident)
    _console_id(console)
    return render("graphics_console", _console_view(v))


def _ticket(ident, console, expiry):
    """A new ticket on the VM's display, waited for; (vm, ConsoleTicket)."""
    vm = obj(Vm, ident, "VM")
    _console_id(console)
    c, s = ctx(), session()
    job = consoles.request_ticket(c, s, vm, expiry)
    s.commit()     # the worker sees the job
    app = current_app.config["KEEL_CTX"]
    jobs.wait(app.engine, job.id, app.config.request_wait)
    return vm, consoles.console(c, s, job)


@route("/vms/<ident>/graphicsconsoles/<console>/ticket", ["POST"], "A one-time password for the VM's console, "
       f"valid for ticket.expiry seconds (default {consoles.DEFAULT_EXPIRY})", body=schemas.TICKET)
def vm_graphics_console_ticket(ident, console):
    expiry = get(body(schemas.TICKET), "ticket", "expiry", default=consoles.DEFAULT_EXPIRY)
    _vm, t = _ticket(ident, console, expiry)
    return render("action", {"status": "complete", "ticket": {"value": t.password, "expiry": expiry}})


@route("/vms/<ident>/graphicsconsoles/<console>/remoteviewerconnectionfile", ["POST"],
       "A virt-viewer (remote-viewer) file for the VM's console, with a new ticket", body=schemas.CONSOLE_FILE)
def vm_graphics_console_file(ident, console):
    body(schemas.CONSOLE_FILE)
    vm, t = _ticket(ident, console, consoles.DEFAULT_EXPIRY)
    text = "".join(f"{k}={v}\n" for k, v in (
        ("type", "vnc"), ("host", t.address), ("port", t.port), ("password", t.password),
        ("delete-this-file", 1), ("title", vm.name)))
    return render("action", {"status": "complete", "remote_viewer_connection_file": "[virt-viewer]\n" + text})


@route("/templates/<ident>/nics", ["GET"], "A template's network interfaces (templates carry none in Keel)")
def template_nics(ident):
    row(reads.TEMPLATES, ident)
    return render("nics", Many("nic", []))


@route("/templates/<ident>/watchdogs", ["GET"], "A template's watchdogs: always empty in Keel")
def template_watchdogs(ident):
    row(reads.TEMPLATES, ident)
    return render("watchdogs", Many("watchdog", []))


@route("/vnicprofiles/<ident>", ["GET"], "Get a vNIC profile (one per network, same id)")
def vnicprofile_get(ident):
    return render("vnic_profile", views.vnic_profile(row(reads.NETWORKS, ident)))


@route("/networks/<ident>/vnicprofiles", ["GET"], "A network's vNIC profiles (one, with the network's id)")
def network_vnicprofiles(ident):
    return render("vnic_profiles", Many("vnic_profile", [views.vnic_profile(row(reads.NETWORKS, ident))]))


# ---- hosts ----------------------------------------------------------------------------
@route("/hosts/<ident>/statistics", ["GET"], "A host's statistics (memory and CPUs, as last polled)")
def host_statistics(ident):
    h = row(reads.HOSTS, ident)
    total, free = h.memory_total or 0, h.memory_free or 0
    stats = [_stat("host", h.id, "memory.total", "Total memory", "bytes", total),
             _stat("host", h.id, "memory.free", "Free memory", "bytes", free),
             _stat("host", h.id, "memory.used", "Used memory", "bytes", max(0, total - free)),
             _stat("host", h.id, "cpu.current.total", "Number of CPUs", "none", h.cpus or 0)]
    return render("statistics", Many("statistic", stats))


@route("/hosts/<ident>/nics", ["GET"], "A host's network interfaces (Keel does not manage host networking: empty)")
def host_nics(ident):
    row(reads.HOSTS, ident)
    return render("host_nics", Many("host_nic", []))


@route("/hosts/<ident>/storage", ["GET"], "A host's block storage (LUNs): empty, Keel has no iSCSI/FC domains")
def host_storage(ident):
    row(reads.HOSTS, ident)
    return render("host_storages", Many("host_storage", []))


@route("/hosts/<ident>/devices", ["GET"], "A host's devices for passthrough: empty in Keel")
def host_devices(ident):
    row(reads.HOSTS, ident)
    return render("host_devices", Many("host_device", []))


# ---- scheduling policies ----------------------------------------------------------------
def _policy(name, ident):
    return {"id": ident, "href": views.href("schedulingpolicies", ident), "name": name,
            "description": {"evenly_distributed": "Spread VMs over the hosts by free memory",
                            "none": "The first host that fits"}[name], "default_policy": name == "evenly_distributed",
            "locked": True}


@route("/schedulingpolicies", ["GET"], "The scheduling policies a cluster may use")
def scheduling_policies():
    return render("scheduling_policies", Many("scheduling_policy", [
        _policy(n, i) for n, i in views.SCHEDULING_POLICY_IDS.items()]))


@route("/schedulingpolicies/<ident>", ["GET"], "Get a scheduling policy")
def scheduling_policy_get(ident):
    for n, i in views.SCHEDULING_POLICY_IDS.items():
        if i == ident:
            return render("scheduling_policy", _policy(n, i))
    from ..errors import not_found
    raise not_found("scheduling policy", ident)


# ---- MAC address pool -----------------------------------------------------------------------
def _mac_pool():
    # what services/vms.py's _new_mac draws from: 56:6f and four random bytes, never a duplicate
    return {"id": views.MAC_POOL_ID, "href": views.href("macpools", views.MAC_POOL_ID), "name": "Default",
            "description": "The engine's MAC addresses", "allow_duplicates": False, "default_pool": True,
            "ranges": Many("range", [{"from": "56:6f:00:00:00:00", "to": "56:6f:ff:ff:ff:ff"}])}


@route("/macpools", ["GET"], "The pool of MAC addresses VM NICs get theirs from (one, for the whole engine)")
def mac_pools():
    return render("mac_pools", Many("mac_pool", [_mac_pool()]))


@route("/macpools/<ident>", ["GET"], "Get the MAC address pool")
def mac_pool_get(ident):
    if ident != views.MAC_POOL_ID:
        raise not_found("MAC address pool", ident)
    return render("mac_pool", _mac_pool())
