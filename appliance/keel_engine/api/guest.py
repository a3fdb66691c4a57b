"""What a VM's guest agent reports, where oVirt's clients read it: the VM's
reported devices (one per guest network interface, with its MAC address and
IP addresses), a NIC's (the guest interfaces with that NIC's MAC address),
one by id, and a NIC with them when followed (follow=reported_devices).
The worker's monitor keeps the report (worker/guest_agents.py); a VM that is
down, or whose guest runs no agent, has none: an empty list."""
from ..errors import bad_request, not_found
from ..models import Nic
from ..representation import Many
from ..services import reads
from . import guest_views, views
from .common import row
from .framework import follow_param, render, route


def _vm_devices(v):
    return guest_views.reported_devices(v.id, views.href("vms", v.id), v.guest_interfaces)


def _nic_devices(v, n):
    return guest_views.reported_devices(v.id, views.href("vms", v.id), v.guest_interfaces,
                                        base=views.href("vms", v.id, "nics", n.id, "reporteddevices"), mac=n.mac)


def nic_view(v):
    """views.nic for NICs of VM row `v`: with their reported devices when
    the request follows reported_devices."""
    if "reported_devices" not in follow_param():
        return lambda n, _extra=None: views.nic(n)
    return lambda n, _extra=None: views.nic(n, _nic_devices(v, n))


def _one(devices, device):
    for d in devices:
        if d["id"] == device:
            return render("reported_device", d)
    raise not_found("reported device", device)


@route("/vms/<ident>/reporteddevices", ["GET"], "A VM's network interfaces as its guest agent reports them "
       "(empty while none reports)")
def vm_reporteddevices_list(ident):
    return render("reported_devices", Many("reported_device", _vm_devices(row(reads.VMS, ident))))


@route("/vms/<ident>/reporteddevices", ["POST"], "Refused: reported devices come from the guest agent")
def vm_reporteddevices_add(ident):
    row(reads.VMS, ident)
    raise bad_request("reporteddevices: these are what the VM's guest agent reports; they cannot be added")


@route("/vms/<ident>/reporteddevices/<device>", ["GET"], "One network interface the VM's guest agent reports")
def vm_reporteddevice_get(ident, device):
    return _one(_vm_devices(row(reads.VMS, ident)), device)


def _vm_and_nic(ident, nic):
    v = row(reads.VMS, ident)
    return v, row(reads.NICS, nic, Nic.vm_id == v.id)


@route("/vms/<ident>/nics/<nic>/reporteddevices", ["GET"], "The guest's interfaces with the MAC address of "
       "this network interface, as the guest agent reports them")
def vm_nic_reporteddevices_list(ident, nic):
    return render("reported_devices", Many("reported_device", _nic_devices(*_vm_and_nic(ident, nic))))


@route("/vms/<ident>/nics/<nic>/reporteddevices/<device>", ["GET"], "One of the guest's interfaces with the "
       "MAC address of this network interface")
def vm_nic_reporteddevice_get(ident, nic, device):
    return _one(_nic_devices(*_vm_and_nic(ident, nic)), device)
