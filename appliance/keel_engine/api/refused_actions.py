"""oVirt actions Keel does not implement yet, on objects that exist: a fault
that names the action and says why, never a 404 that reads as if the VM or
host were missing. The object is looked up first, so a caller who may not see
it still gets the 404 it would get anywhere else."""
from ..errors import bad_request, conflict
from ..services import reads
from .common import row
from .framework import route

# VM actions: (action, why). Suspend is a 409 (oVirt's answer when a VM
# cannot do what is asked); the others are "not supported yet" like any
# field Keel does not implement (a 400).
SUSPEND_WHY = ("VMs run as transient libvirt domains and Keel keeps no memory image of them; "
               "shut the VM down instead")
VM_ACTIONS = (
    ("ticket", "the VM-level ticket action (console tickets are set with "
               ".../vms/{id}/graphicsconsoles/{id}/ticket)"),
    ("freezefilesystems", "freezing guest file systems (it needs a guest agent)"),
    ("thawfilesystems", "thawing guest file systems (it needs a guest agent)"),
    ("logon", "guest single sign-on (it needs a guest agent)"),
    ("export", "export domains and OVA export"),
    ("cancelmigration", "cancelling a migration"),
    ("detach", "detaching a VM from a pool"),
    ("reordermacaddresses", "reordering MAC addresses"),
)
HOST_ACTIONS = (
    ("install", "host installation (Keel reaches hosts through libvirt; install the host's packages yourself)"),
    ("upgrade", "host upgrades"),
    ("upgradecheck", "host upgrade checks"),
    ("refresh", "refreshing host capabilities (the engine worker polls every host)"),
    ("setupnetworks", "host network set-up (Keel does not manage host networking)"),
    ("commitnetconfig", "host network set-up (Keel does not manage host networking)"),
    ("syncallnetworks", "host network set-up (Keel does not manage host networking)"),
    ("approve", "approving registered hosts"),
    ("enrollcertificate", "host certificate enrolment"),
    ("iscsidiscover", "iSCSI storage"),
    ("iscsilogin", "iSCSI storage"),
    ("forceselectspm", "storage pool managers (Keel has none)"),
)


def _refusal(collection, path, kind, action, why):
    def refuse(ident):
        row(collection, ident)      # 404 for an unknown (or hidden) object
        if action == "suspend":
            raise conflict(f"suspend: {why}")
        raise bad_request(f"{action}: {why} is not supported yet")
    refuse.__name__ = f"{kind}_{action}_refused"
    summary = f"Refused: {why}" + ("" if action == "suspend" else " is not supported yet")
    route(f"/{path}/<ident>/{action}", ["POST"], summary)(refuse)


_refusal(reads.VMS, "vms", "vm", "suspend", SUSPEND_WHY)
for _action, _why in VM_ACTIONS:
    _refusal(reads.VMS, "vms", "vm", _action, _why)
for _action, _why in HOST_ACTIONS:
    _refusal(reads.HOSTS, "hosts", "host", _action, _why)
