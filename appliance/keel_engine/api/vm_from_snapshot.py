"""POST /vms with <snapshots><snapshot id="..."/></snapshots> (what
ovirt_vm sends with `snapshot_vm` and `snapshot_name`): a new VM from a
snapshot of another (services/vm_from_snapshot.py). api/vms.py routes the
request here; the body is the VM's, read by that module's helpers."""
from ..errors import bad_request
from ..services import vm_from_snapshot as svc
from . import vms as vm_api
from .fields import get, required
from .framework import created, ctx, session


def add(b):
    snaps = b.get("snapshots") or []
    snap_id = snaps[0].get("id") if snaps else None
    if not snap_id:
        raise bad_request('snapshots.snapshot.id: the snapshot to make the VM from, e.g. '
                          '<snapshots><snapshot id="..."/></snapshots>')
    vm, job = svc.add_vm(ctx(), session(), svc.FromSnapshot(
        name=required(b, "name"), snapshot=snap_id, cluster=b.get("cluster"), template=b.get("template"),
        description=b.get("description"), memory=b.get("memory"), cpus=vm_api._cpus(b),
        os_type=get(b, "os", "type"), high_availability=get(b, "high_availability", "enabled"),
        ha_priority=get(b, "high_availability", "priority"), boot=vm_api._boot(b),
        lease_storage_domain=vm_api._lease(b)[0]))
    return created("vm", job, lambda: vm_api._vm_now(vm.id), lambda: vm_api._vm_now(vm.id))
