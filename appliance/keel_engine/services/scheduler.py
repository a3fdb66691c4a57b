"""Where a VM runs: only 'up' hosts of its cluster with enough free memory;
among those, the one running the fewest VMs (even distribution), then the
one with the most free memory."""
from sqlalchemy import func, select

from ..errors import conflict
from ..models import Host, Vm

# memory reserved per host for libvirt/qemu overhead (bytes)
HOST_RESERVE = 64 * 1024 * 1024
BUSY_STATES = ("up", "powering_up", "wait_for_launch", "migrating", "powering_down", "paused", "reboot_in_progress")


def candidates(s, vm, exclude=()):
    hosts = s.scalars(select(Host).where(Host.cluster_id == vm.cluster_id, Host.status == "up")).all()
    out = []
    for h in hosts:
        if h.id in exclude:
            continue
        # the monitor's free-memory figure is a few seconds old: subtract what we
        # placed since then is not tracked, so count VMs starting right now
        pending = s.scalar(select(func.coalesce(func.sum(Vm.memory), 0)).where(
            Vm.host_id == h.id, Vm.status.in_(("wait_for_launch", "powering_up", "migrating")),
            Vm.id != vm.id)) or 0
        free = (h.memory_free or 0) - pending - HOST_RESERVE
        if free >= vm.memory:
            running = s.scalar(select(func.count()).select_from(Vm).where(
                Vm.host_id == h.id, Vm.status.in_(BUSY_STATES), Vm.id != vm.id))
            out.append((running, -free, h.name, h))
    return [c[3] for c in sorted(out, key=lambda c: c[:3])]


def pick(s, vm, exclude=(), required=None):
    """The best host, or a 409 fault that says why none fits."""
    if required is not None:
        if required.cluster_id != vm.cluster_id:
            raise conflict(f"host {required.name} is not in the cluster of VM {vm.name}")
        if required.status != "up":
            raise conflict(f"host {required.name} is {required.status}, not up")
        if required.id in exclude:
            raise conflict(f"VM {vm.name} already runs on host {required.name}")
        if required not in candidates(s, vm, exclude):
            raise conflict(f"host {required.name} has not enough free memory for VM {vm.name}")
        return required
    hosts = candidates(s, vm, exclude)
    if not hosts:
        raise conflict(f"no host can run VM {vm.name}: no other 'up' host in its cluster has "
                       f"{vm.memory // (1024 * 1024)} MiB free")
    return hosts[0]
