"""What libvirt's domain states mean, for every Keel part (the engine's VM
status, the broker's view of the engine VM, the agent's lease reasoning).

libvirt's virDomainState values are part of its stable ABI, so they are
spelled out here and this module needs no libvirt import."""

NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)

# oVirt's VM status for each domain state
VM_STATUS = {
    RUNNING: "up",
    BLOCKED: "up",
    PAUSED: "paused",
    SHUTDOWN: "powering_down",
    SHUTOFF: "down",
    CRASHED: "down",
    PMSUSPENDED: "suspended",
}


def vm_status(state: int) -> str:
    return VM_STATUS.get(state, "unknown")


def qemu_runs(state: int) -> bool:
    """Does a qemu process exist for the domain (and so hold its leases)?"""
    return state not in (NOSTATE, SHUTOFF, CRASHED)
