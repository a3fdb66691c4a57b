"""The power module's hooks into the engine: the fence action and host status changes.

``install(ctx)`` registers them with ``keel_engine.services.hooks``; the
engine calls it once per process (API workers and the monitor).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import object_session

from .. import virt
from ..errors import bad_request, conflict
from ..models import Host, User, Vm
from ..services import events, hooks
from ..services import hosts as hosts_svc
from . import failover as fo
from . import ipmi
from .agents import AgentConfigError, spec_from_record
from .fencing import fence_through_agents
from .sanlock_leases import LockspaceWatcher
from .vm_leases import VmLeases
from .settings import load as load_settings

log = logging.getLogger("keel.engine.power")
_failover: fo.Failover | None = None


def get_failover(ctx) -> fo.Failover:
    global _failover
    if _failover is not None and _failover.ctx.config.database_url != ctx.config.database_url:
        _failover.stop(timeout=5)      # another engine in this process (tests): start afresh
        _failover = None
    if _failover is None:
        settings = load_settings()
        probes = {}
        watcher = LockspaceWatcher(settings.lockspace_path) if settings.lockspace_path else None
        leases = VmLeases(settings.vm_lease_lockspace, watcher)
        hooks.set_vm_lease_handler(leases)
        if watcher is not None:
            def names(host):
                return tuple(n for n in (host.name, host.hostname) if n)
            probes = {"storage_probe": lambda host, since: watcher.renewed_after(since, *names(host)),
                      "lease_probe": lambda vm, host: leases.is_free(vm, object_session(vm)),
                      "release_leases": lambda host: leases.release_fenced_host(*names(host))}
        _failover = fo.Failover(ctx, settings, **probes)
    return _failover


def install(ctx=None, failover: fo.Failover | None = None) -> fo.Failover | None:
    """Register the handlers; pass a Failover to use custom settings or probes."""
    global _failover
    if failover is not None:
        _failover = failover
    elif ctx is not None:
        get_failover(ctx)
    if host_status_changed not in hooks._status_handlers:
        hooks.on_host_status_changed(host_status_changed)
    if ha_vm_down not in hooks._ha_down_handlers:
        hooks.on_ha_vm_down(ha_vm_down)
    hooks.set_fence_handler(fence_host)
    hooks.set_agent_tester(test_fence_agent)
    return _failover


def _who(ctx, s) -> str:
    if not getattr(ctx, "user_id", None):
        return fo.AUTO
    user = s.get(User, ctx.user_id)
    return f"user {user.name}" if user else f"user {ctx.user_id}"


# ---- host status changes (called by the monitor after its commit) -----------
def host_status_changed(ctx, host, old, new):
    failover = get_failover(ctx)
    if new == "non_responsive":
        failover._told.pop(host.id, None)   # a new episode: its events are new
        failover.start_watch(host.id)
    elif new == "up" and old in ("non_responsive", "down", "connecting"):
        destroy_stale_vms(ctx, host.id)


# An HA VM that keeps going down is not restarted for ever (Proxmox: max_restart):
# after this many unexpected downs within the window it is left down, with an error.
MAX_RESTARTS, RESTART_WINDOW = 3, 600.0
_unexpected_downs: dict[str, list[float]] = {}


def ha_vm_down(ctx, vm_id, host_id):
    """An HA VM went down without the engine asking: restart it, as Proxmox's HA
    stack does (stop an HA VM through the engine, or turn HA off, to keep it down).
    The failover watch restarts it once its lease is free; a host that killed it
    because it lost its storage frees the lease only when sanlock says so."""
    now = time.monotonic()
    with ctx.sessionmaker() as s:
        vm, host = s.get(Vm, vm_id), s.get(Host, host_id)
        if vm is None or host is None or vm.status != "down" or vm.host_id is not None \
                or not vm.high_availability:
            return
        recent = [t for t in _unexpected_downs.get(vm_id, []) if now - t < RESTART_WINDOW] + [now]
        _unexpected_downs[vm_id] = recent
        refs = {"vm_id": vm.id, "host_id": host.id, "cluster_id": vm.cluster_id}
        if len(recent) > MAX_RESTARTS:
            events.add(s, fo.EV_HA_RESTART_FAILED, f"HA VM {vm.name} went down {len(recent)} times in "
                       f"{RESTART_WINDOW / 60:.0f} minutes; {fo.AUTO} does not restart it again (start it "
                       "by hand once the cause is fixed).", "error", **refs)
            s.commit()
            return
        vm.stop_reason = f"{vm.stop_reason}; HA restart pending {fo.pending_marker(host.id)}"
        events.add(s, fo.EV_HA_DOWN, f"HA VM {vm.name} went down on host {host.name} without being asked "
                   f"to; {fo.AUTO} restarts it once its lease is free.", "warning", **refs)
        s.commit()
    failover = get_failover(ctx)
    failover._told.pop(host_id, None)
    failover.start_watch(host_id)


def destroy_stale_vms(ctx, host_id) -> list[str]:
    """A host back from a fence must not resurrect VMs the engine restarted elsewhere."""
    with ctx.sessionmaker() as s:
        host = s.get(Host, host_id)
        if host is None:
            return []
        try:
            conn = virt.connect(host.libvirt_uri, ctx.config.libvirt_timeout)
        except virt.VirtError as exc:
            log.warning("cannot check host %s for stale VMs: %s", host.name, exc)
            return []
        destroyed = []
        try:
            running = virt.with_deadline(lambda: virt.domains(conn), ctx.config.libvirt_timeout,
                                         f"list domains of {host.name}")
            for vm_id in running:
                vm = s.get(Vm, vm_id)
                if vm is None or vm.host_id == host.id:
                    continue
                where = f"runs on host {s.get(Host, vm.host_id).name}" if vm.host_id else f"is {vm.status}"
                dom = virt.with_deadline(lambda: conn.lookupByUUIDString(vm_id),
                                         ctx.config.libvirt_timeout, f"find {vm.name}")
                virt.with_deadline(dom.destroy, ctx.config.libvirt_timeout, f"destroy {vm.name}")
                destroyed.append(vm_id)
                events.add(s, fo.EV_STALE_VM, f"Stale copy of VM {vm.name} destroyed on returning host "
                           f"{host.name} by {fo.AUTO}: the engine records that the VM {where}.",
                           "warning", vm_id=vm.id, host_id=host.id)
        finally:
            conn.close()
        s.commit()
        return destroyed


# ---- POST /hosts/{id}/fence ------------------------------------------------
def fence_host(ctx, host, fence_type, agents):
    """oVirt's fence action: status, start, stop, restart, manual."""
    failover = get_failover(ctx)
    settings = failover.settings
    with ctx.sessionmaker() as s:
        host = s.get(Host, host.id)
        who = _who(ctx, s)
        refs = {"host_id": host.id, "cluster_id": host.cluster_id, "user_id": ctx.user_id}
        if fence_type == "manual":
            return _manual(ctx, s, failover, host, who, refs)
        try:
            specs = [spec_from_record(a) for a in agents]
        except AgentConfigError as exc:
            raise bad_request(f"host {host.name}: {exc}") from None

        def emit(sev, text):
            events.add(s, fo.EV_FENCE_AGENT, text + ".", sev, **refs)

        if fence_type == "status":
            out = fence_through_agents(specs, "status", host=host.name, retries=0,
                                       deadline=settings.status_deadline, emit=emit, run=failover.run)
            s.commit()
            if not out.ok:
                raise conflict(out.message)
            return {"status": "complete", "power_management": {"status": out.power},
                    "detail": out.message}
        if fence_type == "start":
            out = _power_on(s, failover, host, specs, who, refs, emit)
            if not out.ok:
                raise conflict(out.message)
            return {"status": "complete", "power_management": {"status": out.power}, "detail": out.message}
        # stop / restart: off first, confirmed, then the HA VMs move
        with failover._lock(host.id):
            ok = failover._fence_off(s, host, specs, who=who, why=f"{who} asked to {fence_type} it")
        if not ok:
            raise conflict(f"{fence_type} of host {host.name} failed: power-off not confirmed "
                           "(see the host's events)")
        detail = f"host {host.name} is powered off"
        if fence_type == "restart":
            detail = _power_on(s, failover, host, specs, who, refs, emit).message
        host_id = host.id
    failover.start_watch(host_id)   # restarts its HA VMs elsewhere, with events
    return {"status": "complete", "power_management": {"status": "off" if fence_type == "stop" else "on"},
            "detail": detail}


def _power_on(s, failover, host, specs, who, refs, emit):
    """Power on; a host that was down goes to 'connecting' so the monitor polls it again,
    and the power-on event gives it the boot grace before it could be fenced again."""
    settings = failover.settings
    out = fence_through_agents(specs, "on", host=host.name, retries=settings.fence_retries,
                               backoff=settings.fence_backoff, deadline=settings.on_deadline,
                               emit=emit, run=failover.run, sleep=failover.sleep)
    if out.ok:
        events.add(s, fo.EV_POWER_ON, f"Host {host.name} powered on by {who} ({out.message}); "
                   f"it has {settings.boot_grace:.0f} s to answer before it could be fenced again.", **refs)
        if host.status == "down":
            hosts_svc.set_status(s, host, "connecting", f"powered on by {who}; waiting for libvirt to answer")
    else:
        events.add(s, fo.EV_FENCE_FAILED, f"Power on of host {host.name} requested by {who} failed: "
                   f"{out.message}.", "error", **refs)
    s.commit()
    return out


def _manual(ctx, s, failover, host, who, refs):
    """'Confirm host has been rebooted': the admin vouches that the host is off."""
    if host.status not in ("non_responsive", "down", "connecting"):
        raise conflict(f"host {host.name} is {host.status}: only a non-responsive host can be "
                       "confirmed as rebooted")
    events.add(s, fo.EV_MANUAL_FENCE, f"{who[0].upper() + who[1:]} confirmed that host {host.name} "
               "has been rebooted (manual fence); its VMs are considered down.", "warning", **refs)
    with failover._lock(host.id):
        failover._mark_down(s, host, f"{fo.FENCED}reboot confirmed manually by {who}")
    s.commit()
    host_id = host.id
    failover.start_watch(host_id)
    return {"status": "complete", "power_management": {"status": "off"},
            "detail": f"host {host.name} confirmed rebooted by {who}"}


def test_fence_agent(ctx, s, host, agent_id) -> dict:
    """POST /hosts/{id}/fenceagents/{id}/test: ask the BMC, write an event, answer
    as an oVirt action (status 'failed' with a fault when the BMC cannot answer)."""
    record = next(r for r in hosts_svc.fence_agents_for_host(s, host.id, ctx.config) if r["id"] == agent_id)
    label = f"{record['type']}:{record['username']}@{record['address']}:{record['port']}"
    who = _who(ctx, s) if getattr(ctx, "user_id", None) else "an unknown user"
    host_name, refs = host.name, {"host_id": host.id, "cluster_id": host.cluster_id, "user_id": ctx.user_id}
    deadline = get_failover(ctx).settings.status_deadline
    s.commit()      # no transaction stays open while the BMC is asked (up to the deadline)
    result = test_agent_record(record, deadline)
    detail = result["detail"]   # names the agent's address, never its credentials
    ok = result["status"] == "complete"
    events.add(s, fo.EV_AGENT_TEST, f"Fence agent {label} of host {host_name} tested by {who}: {detail}.",
               "normal" if ok else "warning", **refs)
    s.commit()
    if ok:
        return {"status": "complete", "power_management": result["power_management"], "description": detail}
    return {"status": "failed", "power_management": {"status": "unknown"},
            "fault": {"reason": "Operation Failed", "detail": detail}}


def test_agent_record(record, deadline: float = 15.0) -> dict:
    """oVirt UI's 'Test' for one fence agent record (plain spec with the password)."""
    try:
        spec = spec_from_record(record)
    except AgentConfigError as exc:
        return {"status": "failed", "kind": "config", "detail": f"Test failed: {exc}"}
    result = ipmi.test_agent(spec, deadline)
    if result.ok:
        return {"status": "complete", "power_management": {"status": result.power},
                "detail": f"Test succeeded, the BMC at {spec.address}:{spec.port} reports power {result.power}"}
    what = {ipmi.AUTH: "rejected the user name, password or privilege level",
            ipmi.TIMEOUT: "did not answer in time", ipmi.UNREACHABLE: "cannot be reached",
            ipmi.BMC_ERROR: "answered with an error"}.get(result.kind, "failed")
    return {"status": "failed", "kind": result.kind,
            "detail": f"Test failed, the BMC at {spec.address}:{spec.port} {what} "
                      f"({result.kind}: {result.message})"}
