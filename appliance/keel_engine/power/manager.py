"""Power management as the engine worker runs it: the one object that owns
host failure handling (the Failover), the HA VMs' leases on its behalf, the
fence action and the fence agent test. The worker calls it directly:

    power = PowerManagement(ctx)               # ctx.leases is set from it
    power.host_status_changed(host_id, old, new)   # from the monitor
    power.ha_vm_down(vm_id, host_id)               # from the monitor
    power.run_fence(ctx, s, job) / power.run_agent_test(ctx, s, job)   # jobs
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import object_session

from .. import virt
from ..errors import bad_request, conflict
from ..models import Event, Host, User, Vm, utcnow
from ..services import events
from ..services import hosts as hosts_svc
from ..services.vm_leases import VmLeases
from . import failover as fo
from keel_common import ipmi
from .agents import AgentConfigError, spec_from_record
from .fencing import fence_through_agents

log = logging.getLogger("keel.engine.power")
# An HA VM that keeps going down is not restarted for ever (Proxmox: max_restart):
# after this many unexpected downs within the window it is left down, with an error.
MAX_RESTARTS, RESTART_WINDOW = 3, 600.0


class PowerManagement:
    def __init__(self, ctx, failover: fo.Failover | None = None, leases: VmLeases | None = None):
        settings = ctx.config.power
        self.leases = leases if leases is not None else VmLeases.from_settings(settings)
        ctx.leases = self.leases
        self.ctx = ctx
        if failover is None:
            probes = {}
            watcher = self.leases.watcher
            if watcher is not None:
                def names(host):
                    return tuple(n for n in (host.name, host.hostname) if n)
                probes = {"storage_probe": lambda host, since: watcher.renewed_after(since, *names(host)),
                          "lease_probe": lambda vm, host: self.leases.is_free(vm, object_session(vm)),
                          "release_leases": lambda host: self.leases.release_fenced_host(*names(host))}
            if ctx.config.ha_etcd_configured:
                probes["agent_fences"] = self.agent_fences
            failover = fo.Failover(ctx, settings, **probes)
        self.failover = failover
        self.max_restarts = MAX_RESTARTS

    def agent_fences(self, s) -> dict:
        """The fences the HA agents recorded, from the hosts' etcd. `s` is
        the caller's session: a second one would wait on its write lock."""
        from keel_common.etcdclient import read_fences
        etcd = hosts_svc.hosts_etcd(s, self.ctx.config)
        return {} if etcd is None else read_fences(etcd, timeout=5.0)

    def stop(self, timeout: float = 30.0) -> None:
        self.failover.stop(timeout)

    # ---- from the monitor -------------------------------------------------
    def host_status_changed(self, host_id, old, new):
        if new == "non_responsive":
            self.failover.new_episode(host_id)
            self.failover.start_watch(host_id)
        elif new in ("up", "maintenance") and old in ("non_responsive", "down", "connecting"):
            self.destroy_stale_vms(host_id)

    def ha_vm_down(self, vm_id, host_id):
        """An HA VM went down without the engine asking: restart it, as Proxmox's HA
        stack does (stop an HA VM through the engine, or turn HA off, to keep it down).
        The failover watch restarts it once its lease is free; a host that killed it
        because it lost its storage frees the lease only when sanlock says so."""
        with self.ctx.sessionmaker() as s:
            vm, host = s.get(Vm, vm_id), s.get(Host, host_id)
            if vm is None or host is None or vm.status != "down" or vm.host_id is not None \
                    or not vm.high_availability:
                return
            refs = {"vm_id": vm.id, "host_id": host.id, "cluster_id": vm.cluster_id}
            since = utcnow() - timedelta(seconds=RESTART_WINDOW)
            recent = s.scalar(select(func.count()).select_from(Event).where(
                Event.vm_id == vm.id, Event.code == fo.EV_HA_DOWN, Event.time >= since)) + 1
            if recent > self.max_restarts:
                events.add(s, fo.EV_HA_RESTART_FAILED, f"HA VM {vm.name} went down {recent} times in "
                           f"{RESTART_WINDOW / 60:.0f} minutes; {fo.AUTO} does not restart it again (start "
                           "it by hand once the cause is fixed).", "error", **refs)
                vm.ha_restart_host_id = None
                s.commit()
                return
            vm.ha_restart_host_id = host.id
            events.add(s, fo.EV_HA_DOWN, f"HA VM {vm.name} went down on host {host.name} without being asked "
                       f"to; {fo.AUTO} restarts it once its lease is free.", "warning", **refs)
            s.commit()
        self.failover.new_episode(host_id)
        self.failover.start_watch(host_id)

    def destroy_stale_vms(self, host_id) -> list[str]:
        """A host back from a fence must not resurrect VMs the engine restarted elsewhere."""
        ctx = self.ctx
        with ctx.sessionmaker() as s:
            host = s.get(Host, host_id)
            if host is None:
                return []
            name, uri = host.name, host.libvirt_uri
        try:      # libvirt first, with no transaction open
            conn = virt.connect(uri, ctx.config.libvirt_timeout)
        except virt.VirtError as exc:
            log.warning("cannot check host %s for stale VMs: %s", name, exc)
            return []
        try:
            running = virt.with_deadline(lambda: virt.domains(conn), ctx.config.libvirt_timeout,
                                         f"list domains of {name}")
            with ctx.sessionmaker() as s:
                stale = {vm.id: (vm.name, vm.host_id, vm.status) for vm in s.scalars(
                    select(Vm).where(Vm.id.in_(list(running)))) if vm.host_id != host_id}
                where = {vm_id: (f"runs on host {s.get(Host, h).name}" if h else f"is {st}")
                         for vm_id, (_n, h, st) in stale.items()}
            destroyed = []
            for vm_id, (vm_name, _h, _st) in stale.items():
                dom = virt.with_deadline(lambda: conn.lookupByUUIDString(vm_id),
                                         ctx.config.libvirt_timeout, f"find {vm_name}")
                virt.with_deadline(dom.destroy, ctx.config.libvirt_timeout, f"destroy {vm_name}")
                destroyed.append(vm_id)
                self.failover.event_now(fo.EV_STALE_VM, f"Stale copy of VM {vm_name} destroyed on returning host "
                                        f"{name} by {fo.AUTO}: the engine records that the VM {where[vm_id]}.",
                                        "warning", vm_id=vm_id, host_id=host_id)
        finally:
            conn.close()
        return destroyed

    # ---- jobs: POST /hosts/{id}/fence and the fence agent test ------------------
    def run_fence(self, ctx, s, job):
        """oVirt's fence action: status, start, stop, restart, manual."""
        host = s.get(Host, job.params["host_id"])
        if host is None:
            raise conflict("the host was removed")
        fence_type = job.params["fence_type"]
        who = _who(s, job.owner_id)
        settings = self.failover.settings
        refs = {"host_id": host.id, "cluster_id": host.cluster_id, "user_id": job.owner_id}
        if fence_type == "manual":
            # no transaction open while waiting for the host's lock: a failover pass
            # holding it needs SQLite's write lock to finish
            s.commit()
            with self.failover.lock(host.id):
                s.refresh(host)
                if host.status not in ("non_responsive", "down", "connecting"):
                    raise conflict(f"host {host.name} is {host.status}: only a non-responsive host can be "
                                   "confirmed as rebooted")
                self.failover.confirm_manually(s, host, who)
            s.commit()
            self.failover.start_watch(host.id)
            return {"power_management": {"status": "off"}, "detail": f"host {host.name} confirmed rebooted by {who}"}
        try:
            specs = [spec_from_record(a) for a in hosts_svc.fence_agents_for_host(s, host.id, ctx.config)]
        except AgentConfigError as exc:
            raise bad_request(f"host {host.name}: {exc}") from None
        if not specs:
            raise conflict("no power management configured for this host (add a fence agent)")

        def emit(sev, text):
            self.failover.event_now(fo.EV_FENCE_AGENT, text + ".", sev, **refs)

        s.commit()      # no transaction stays open while a BMC is asked
        if fence_type == "status":
            out = fence_through_agents(specs, "status", host=host.name, retries=0,
                                       deadline=settings.status_deadline, emit=emit, run=self.failover.run)
            s.commit()
            if not out.ok:
                raise conflict(out.message)
            return {"power_management": {"status": out.power}, "detail": out.message}
        if fence_type == "start":
            out = self._power_on(s, host, specs, who, refs, emit)
            if not out.ok:
                raise conflict(out.message)
            return {"power_management": {"status": out.power}, "detail": out.message}
        # stop / restart: off first, confirmed, then the HA VMs move
        with self.failover.lock(host.id):
            ok = self.failover.fence_off(s, host, specs, who=who, why=f"{who} asked to {fence_type} it",
                                         action="off" if fence_type == "stop" else "restart")
        if not ok:
            raise conflict(f"{fence_type} of host {host.name} failed: power-off not confirmed "
                           "(see the host's events)")
        detail = f"host {host.name} is powered off"
        if fence_type == "restart":
            detail = self._power_on(s, host, specs, who, refs, emit).message
        self.failover.start_watch(host.id)   # restarts its HA VMs elsewhere, with events
        return {"power_management": {"status": "off" if fence_type == "stop" else "on"}, "detail": detail}

    def _power_on(self, s, host, specs, who, refs, emit):
        """Power on; a host that was down goes to 'connecting' so the monitor polls it again,
        and the power-on event gives it the boot grace before it could be fenced again."""
        settings = self.failover.settings
        out = fence_through_agents(specs, "on", host=host.name, retries=settings.fence_retries,
                                   backoff=settings.fence_backoff, deadline=settings.on_deadline,
                                   emit=emit, run=self.failover.run, sleep=self.failover.sleep)
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

    def run_agent_test(self, ctx, s, job) -> dict:
        """oVirt UI's 'Test': what the BMC says now. A BMC that refuses or does not
        answer is a normal answer (status 'failed' with the reason), not an error."""
        host = s.get(Host, job.params["host_id"])
        if host is None:
            raise conflict("the host was removed")
        record = next((r for r in hosts_svc.fence_agents_for_host(s, host.id, ctx.config)
                       if r["id"] == job.params["agent_id"]), None)
        if record is None:
            raise conflict("the fence agent was removed")
        label = f"{record['type']}:{record['username']}@{record['address']}:{record['port']}"
        who = _who(s, job.owner_id)
        refs = {"host_id": host.id, "cluster_id": host.cluster_id, "user_id": job.owner_id}
        s.commit()      # no transaction stays open while the BMC is asked
        result = test_agent_record(record, self.failover.settings.status_deadline)
        detail = result["detail"]   # names the agent's address, never its credentials
        ok = result["status"] == "complete"
        events.add(s, fo.EV_AGENT_TEST, f"Fence agent {label} of host {host.name} tested by {who}: {detail}.",
                   "normal" if ok else "warning", **refs)
        if ok:
            return {"status": "complete", "power_management": result["power_management"], "description": detail}
        return {"status": "failed", "power_management": {"status": "unknown"},
                "fault": {"reason": "Operation Failed", "detail": detail}}


def _who(s, user_id) -> str:
    if not user_id:
        return fo.AUTO
    user = s.get(User, user_id)
    return f"user {user.name}" if user else f"user {user_id}"


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
